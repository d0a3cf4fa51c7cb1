CREATE RULE orders_log AS ON INSERT TO orders DO ALSO (
  INSERT INTO order_log VALUES (NEW.id, 'inserted;');
  NOTIFY orders_changed;
);
INSERT INTO notes VALUES (E'it\'s a \\ backslash; still a string', 'plain \ backslash', U&'d\0061t\+000061', B'1010', X'1F', N'national');
SELECT "weird;""identifier" FROM "Quoted""Table";
/* outer /* nested ; */ still comment ; */
SELECT 1;

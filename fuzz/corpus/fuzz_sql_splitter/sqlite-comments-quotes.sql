/* SQLite comments do not nest: /* this closes here */
SELECT 'it''s; fine', "col""umn", [br;acket], `back;tick` FROM t; -- trailing ; comment
INSERT INTO t VALUES ('multi
line; string');
SELECT 1

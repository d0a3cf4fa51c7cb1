CREATE FUNCTION add_tax(cents integer) RETURNS integer
LANGUAGE SQL IMMUTABLE
BEGIN ATOMIC
  SELECT CASE WHEN cents < 0 THEN 0 ELSE cents * 119 / 100 END;
  SELECT 1;
END;

CREATE OR REPLACE PROCEDURE archive_orders(before date)
LANGUAGE SQL
BEGIN ATOMIC
  INSERT INTO orders_archive SELECT * FROM orders WHERE created_at < before;
  DELETE FROM orders WHERE created_at < before;
END;
CREATE TABLE after_routine (id int);

CREATE TABLE a (id int);
-- windows line endings
INSERT INTO a VALUES (1);

SELECT 2

DO $outer$
DECLARE
  q text := $q$SELECT 'a;b' $$ not a close $$ $q$;
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'reporting') THEN
    EXECUTE 'CREATE ROLE reporting';
  END IF;
  EXECUTE q;
END
$outer$;
SELECT $1, $2 FROM t WHERE a$$ = 1;
SELECT 1$$abc$$;

-- Keep updated_at current on every row change.
CREATE OR REPLACE FUNCTION touch_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  NEW.updated_at := now();  -- a semicolon; inside the body
  RETURN NEW;
END;
$$;

CREATE TRIGGER accounts_touch BEFORE UPDATE ON accounts
  FOR EACH ROW EXECUTE FUNCTION touch_updated_at();

CREATE FUNCTION order_label(o orders) RETURNS text AS $body$
  SELECT 'order #' || o.id || ' ($' || o.total_cents / 100 || ')';
$body$ LANGUAGE sql STABLE;

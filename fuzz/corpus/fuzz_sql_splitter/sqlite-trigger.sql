-- Audit every price change.
CREATE TABLE price_history (product_id INTEGER, old_cents INTEGER, new_cents INTEGER);
CREATE TRIGGER IF NOT EXISTS products_price_history
AFTER UPDATE OF price_cents ON products
WHEN OLD.price_cents <> NEW.price_cents
BEGIN
  INSERT INTO price_history VALUES (OLD.id, OLD.price_cents, NEW.price_cents);
  UPDATE products SET "end" = CASE WHEN NEW.price_cents = 0 THEN 1 ELSE 0 END WHERE id = NEW.id;
END;
CREATE TEMP TRIGGER t2 BEFORE DELETE ON [order items] BEGIN SELECT RAISE(ABORT, 'no; never'); END  ;
EXPLAIN CREATE TRIGGER t3 AFTER INSERT ON `weird;name` BEGIN SELECT 1; /* c */ END /* x */ ;
SELECT 'done';

CREATE TABLE orders (
  id INTEGER PRIMARY KEY,
  account_id INTEGER NOT NULL REFERENCES accounts (id),
  total_cents INTEGER NOT NULL CHECK (total_cents >= 0),
  note TEXT -- free text; may contain ';' like this one
);
CREATE INDEX orders_account_idx ON orders (account_id);

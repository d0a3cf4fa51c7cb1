-- migledger:no-transaction
-- migledger:requires 0004
CREATE INDEX CONCURRENTLY IF NOT EXISTS orders_by_account ON orders (account_id);
VACUUM (ANALYZE) orders;

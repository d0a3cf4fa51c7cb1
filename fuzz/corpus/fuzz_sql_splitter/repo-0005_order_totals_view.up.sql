CREATE VIEW account_totals AS
  SELECT a.email, count(o.id) AS orders, coalesce(sum(o.total_cents), 0) AS total_cents
  FROM accounts a LEFT JOIN orders o ON o.account_id = a.id
  GROUP BY a.email;

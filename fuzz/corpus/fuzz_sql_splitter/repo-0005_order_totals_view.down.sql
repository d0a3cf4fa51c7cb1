DROP VIEW account_totals;

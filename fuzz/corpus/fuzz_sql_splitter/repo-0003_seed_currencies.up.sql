CREATE TABLE currencies (code TEXT PRIMARY KEY, name TEXT NOT NULL);
INSERT INTO currencies (code, name) VALUES
  ('EUR', 'Euro'),
  ('USD', 'US dollar'),
  ('GBP', 'Pound sterling; British');

SELECT 1; /* unterminated comment
SELECT 2;

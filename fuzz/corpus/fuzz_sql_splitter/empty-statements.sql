;;; ; 
-- only comments
/* and */ ;
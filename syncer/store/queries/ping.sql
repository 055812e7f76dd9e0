-- No table: the database answers a query.
SELECT 1

-- A reservation's SKU is a stock row the same transaction has just locked
-- (FOR UPDATE) and updated: the foreign key re-checked that row for every
-- reserved item (a scan of stock plus a row lock, about 2,000 per consumer
-- batch) and guaranteed nothing more. Stock rows are never deleted.
ALTER TABLE reservations DROP CONSTRAINT IF EXISTS reservations_sku_fkey;

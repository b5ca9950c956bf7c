-- Stock levels per product (not personal data), as imported or posted: the latest reading of
-- a product is its stock; the stock-cover report divides it by the forecast demand.
CREATE TABLE stock_levels (
    product   TEXT NOT NULL,
    at        INTEGER NOT NULL,
    quantity  REAL NOT NULL,
    source    TEXT NOT NULL,
    PRIMARY KEY (product, at)
) WITHOUT ROWID;

-- Imports of a county's schools and school conditions belong to the county, not to one school.
ALTER TABLE import_batch ALTER COLUMN school_code DROP NOT NULL;

-- Try counts a coupon use against the template's and the all-templates
-- daily limit in one statement: each row carries the limit it was last
-- counted under, and the CHECK refuses the count that would pass it.
ALTER TABLE daily_use
  ADD COLUMN IF NOT EXISTS cap INT NOT NULL DEFAULT 0,
  ADD CONSTRAINT IF NOT EXISTS ck_daily_use_cap CHECK (cap = 0 OR used <= cap);

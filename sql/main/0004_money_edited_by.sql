-- Who last changed a template's money rules after its creation
-- (participant.MoneyRuleChanges); maker-checker refuses their approval as
-- it refuses the creator's. Empty while nobody has.
ALTER TABLE coupon_template ADD COLUMN IF NOT EXISTS money_edited_by VARCHAR(128) NOT NULL DEFAULT '' AFTER approved_by;

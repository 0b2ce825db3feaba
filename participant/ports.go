package participant

import (
	"context"
	"time"
)

// Page asks for one page of a listing. After is an opaque cursor produced
// by the store (empty for the first page).
type Page struct {
	Size  int
	After string
}

// Catalog keeps campaigns, templates and stock operations (the main
// database). Every change writes an audit row for actor in the same
// transaction; a replayed creation writes none.
type Catalog interface {
	// CreateCampaign stores c and sets its ID. When c.RequestID was used
	// before it returns the campaign created then and replayed=true.
	CreateCampaign(ctx context.Context, c *Campaign, actor Actor) (replayed bool, err error)
	// UpdateCampaign applies fn to the campaign inside a transaction.
	UpdateCampaign(ctx context.Context, id int64, fn func(*Campaign) error, actor Actor) (*Campaign, error)
	GetCampaign(ctx context.Context, id int64) (*Campaign, error)
	ListCampaigns(ctx context.Context, status CampaignStatus, p Page) ([]*Campaign, string, error)

	CreateTemplate(ctx context.Context, t *Template, actor Actor) (replayed bool, err error)
	// UpdateTemplate applies fn to the template inside a transaction and bumps its version.
	UpdateTemplate(ctx context.Context, id int64, fn func(*Template) error, actor Actor) (*Template, error)
	GetTemplate(ctx context.Context, id int64) (*Template, error)
	ListTemplates(ctx context.Context, campaignID int64, status TemplateStatus, p Page) ([]*Template, string, error)
	// AddStock locks the template and asks decide about op, passing the
	// earlier top-up of op's request ID if there was one. When decide
	// applies it (changing t), the top-up is recorded and t written;
	// otherwise replayed is true and nothing is written.
	AddStock(ctx context.Context, op StockOp, decide func(t *Template, prev *StockOp) (apply bool, err error), actor Actor) (t *Template, replayed bool, err error)

	// ListAudit pages through the audit log, newest first.
	ListAudit(ctx context.Context, f AuditFilter, p Page) ([]AuditEntry, string, error)
}

// StockOp is one idempotent stock top-up.
type StockOp struct {
	RequestID     string
	TemplateID    int64
	Amount        int64
	SubStockCount int32
	Operator      string
}

// Claim is a coupon to be written to its owner's shard.
type Claim struct {
	Coupon       *Coupon
	PerUserLimit int32
}

// Coupons keeps coupon records, sharded by user ID.
type Coupons interface {
	// Insert writes the coupon and counts it against the per-user limit in
	// one local transaction. It returns EREFUSED/USER_LIMIT_REACHED when the
	// limit is reached and ErrDuplicateRequest when the request ID exists.
	Insert(ctx context.Context, c Claim) error
	// ByRequest finds the coupon a request ID produced in the user's
	// table, whoever's it is: request IDs are unique per table.
	ByRequest(ctx context.Context, userID int64, requestID string) (*Coupon, error)
	ByCode(ctx context.Context, userID int64, code string) (*Coupon, error)
	ByID(ctx context.Context, userID, id int64) (*Coupon, error)
	ListByUser(ctx context.Context, userID int64, f CouponFilter, p Page) ([]*Coupon, string, error)
	// ListByUserAndBinds is ListByUser and the phones of the user's
	// unfinished binds (see Phones), in one query in the common case.
	ListByUserAndBinds(ctx context.Context, userID int64, f CouponFilter, p Page) ([]*Coupon, string, []Phone, error)
	ListByTemplate(ctx context.Context, templateID int64, f CouponFilter, p Page) ([]*Coupon, string, error)
	// Issued counts every coupon of the template across all shards.
	Issued(ctx context.Context, templateID int64) (int64, error)
	// Stats counts the template's coupons by effective status at now.
	Stats(ctx context.Context, templateID int64, now time.Time) (TemplateStats, error)
	// Ledger reads the ledger rows of the user's coupons ids, oldest first.
	Ledger(ctx context.Context, userID int64, ids []int64) ([]LedgerEntry, error)
}

// CouponFilter narrows a coupon listing. Zero values match everything.
type CouponFilter struct {
	Status     CouponStatus
	TemplateID int64
	Now        time.Time
}

// Stock is the live remaining stock of templates (Redis). Every method
// that changes counters is safe to repeat: a retried call never applies
// twice (Take may, at worst, take a unit for nothing, which only leaves the
// counters short until the stock audit repairs them).
type Stock interface {
	// Take takes one unit. It returns a Ticket to give the unit back with,
	// ErrSoldOut, or ErrStockMissing when the counters must be rebuilt.
	Take(ctx context.Context, templateID int64, subKeys int32, hint uint64) (Ticket, error)
	// Give returns a unit taken with t, once per ticket, unless the
	// counters were rebuilt since.
	Give(ctx context.Context, t Ticket) error
	// Remaining sums the sub-keys; ok is false when any sub-key is missing.
	Remaining(ctx context.Context, templateID int64, subKeys int32) (n int64, ok bool, err error)
	// Generation is the generation of the template's counters; ok is false
	// when they are missing.
	Generation(ctx context.Context, templateID int64) (gen string, ok bool, err error)
	// Reset drops the template's counters so that no claim can take from them.
	Reset(ctx context.Context, templateID int64, subKeys int32) error
	// Set writes fresh counters of a new generation holding remaining units
	// over subKeys keys.
	Set(ctx context.Context, templateID int64, subKeys int32, remaining int64) error
	// Add adds n units to the counters of generation gen, once per opID; ok
	// is false when they are missing or of another generation.
	Add(ctx context.Context, templateID int64, subKeys int32, n int64, gen, opID string) (ok bool, err error)
}

// Ticket proves a unit was taken from one sub-key of one counter
// generation; ID makes giving it back happen once.
type Ticket struct {
	TemplateID int64
	Sub        int32
	Generation string
	ID         string
}

// Marker is the record of a request ID: which claim holds it (FP), the
// call that took it (Token) and when, and whether that call ended with the
// coupon maybe issued (a commit of unknown outcome).
type Marker struct {
	FP          string
	Token       string
	Started     time.Time
	MaybeIssued bool
}

// Requests keeps request markers (Redis): a claim's request ID is marked
// once, when the claim begins, and the mark stays for the marker TTL
// whatever the outcome but a definite failure, so success costs no second
// write; a call that ends with the coupon maybe issued marks the mark so,
// and every later attempt then looks for the coupon before anything else.
// Markers live in buckets; each bucket remembers since when it has held
// markers, so a caller can tell whether a request ID seen fresh could have
// been marked before and lost (Redis lost its data) within the TTL.
// Markers' Started and buckets' births are stamped on the service's clock
// (Deps.Now), the one the service compares them with.
type Requests interface {
	// Begin marks requestID for the claim fp for ttl. When it is already
	// marked it returns the holder with started=false. since is when the
	// marker's bucket began holding markers.
	Begin(ctx context.Context, requestID, fp string, ttl time.Duration) (tok string, started bool, held Marker, since time.Time, err error)
	// Peek reads the marker, if any, without marking.
	Peek(ctx context.Context, requestID string) (held *Marker, since time.Time, err error)
	// TakeOver replaces the marker held (a call that died in flight, or
	// one that ended maybe issued) with one for the claim fp; ok is false
	// when it changed meanwhile.
	TakeOver(ctx context.Context, requestID string, held Marker, fp string, ttl time.Duration) (tok string, ok bool, err error)
	// Forget drops the marker the call holding tok took, after a definite
	// failure, so that a retry starts afresh.
	Forget(ctx context.Context, requestID, fp, tok string) error
	// MaybeIssued keeps the marker the call holding tok took for the rest
	// of its TTL, marked as maybe issued: the call ended without knowing
	// whether its coupon, or an earlier attempt's, was written.
	MaybeIssued(ctx context.Context, requestID, fp, tok string) error
}

// Leases are named, expiring locks that keep one replica doing a job.
type Leases interface {
	// Lock takes a named lease for ttl; the returned func releases it.
	Lock(ctx context.Context, name string, ttl time.Duration) (unlock func(), ok bool, err error)
}

// Decide looks at the coupon as the branch's transaction locked it and
// returns the change to make, nil for none, or an error that rolls the
// transaction (barrier included) back.
type Decide func(c *Coupon) (*Change, error)

// Outcome is what a branch found and left.
type Outcome struct {
	// Coupon is as the branch left it.
	Coupon *Coupon
	// Skipped: the barrier skipped the branch (a duplicate, null
	// compensation or a Try after its Cancel); decide was not called and
	// Coupon is read as it stands.
	Skipped bool
	// Changed: decide returned a change and it was written.
	Changed bool
}

// Branches runs DTM branches on the coupon records.
type Branches interface {
	// Apply writes the barrier for br, locks the user's coupon row, asks
	// decide what to do and writes that, all in one local transaction on
	// the user's shard. A coupon the user does not hold is ENOTFOUND.
	Apply(ctx context.Context, br Branch, userID int64, code string, decide Decide) (Outcome, error)
	// Owner finds which user holds a code, scanning every shard; for
	// operators' lookups only: answers to a user or an order service must
	// not tell another user's coupon from none.
	Owner(ctx context.Context, code string) (int64, bool, error)
	// ReturnRecord reads the return a request ID made in the user's shard
	// database, whoever's; nil when none.
	ReturnRecord(ctx context.Context, userID int64, requestID string) (*ReturnRecord, error)
}

// PendingClaim is a coupon to be written to a phone's shard.
type PendingClaim struct {
	Phone  Phone
	Coupon *Coupon
	// PerPhoneLimit is the template's per-user limit, applied to the phone.
	PerPhoneLimit int32
}

// Phones keeps the coupons claimed by phone numbers not yet bound to a
// user, sharded by phone, and moves them to the user's shard when the phone
// is bound. The two shards are different databases, so a move is a sequence
// of idempotent steps rather than one transaction:
//
//  0. AddBindIntent records (user, phone) in the user's shard;
//  1. MarkBind binds the phone to the user and marks its pending coupons
//     with the user, in one transaction in the phone's shard;
//  2. CopyBound copies the marked coupons into the user's shard, keeping
//     their ID, code and request ID, and counts each one actually inserted
//     in the user's claim count, in one transaction (the primary key makes
//     a repeated copy a no-op);
//  3. DeleteBound deletes the copied coupons from the phone's shard;
//  4. RemoveBindIntent drops the record of step 0.
//
// A crash anywhere leaves the intent of step 0 behind; the next BindPhone,
// ListUserCoupons or GetCoupon of the user runs steps 1 to 4 again and
// finishes the move. Once a phone is bound no coupon can be added to it
// (claims go straight to the user), so after any run's step 3 nothing is
// left to move and the intent may go.
type Phones interface {
	// PhoneOwner is the user the phone is bound to, 0 when it is not bound.
	PhoneOwner(ctx context.Context, p Phone) (int64, error)
	// PendingClaimed counts the phone's pending coupons of the template.
	PendingClaimed(ctx context.Context, p Phone, templateID int64) (int32, error)
	// InsertPending writes the coupon for the phone in one local
	// transaction that holds the phone's lock and enforces PerPhoneLimit
	// exactly. It returns ErrPhoneBound when the phone is bound,
	// EREFUSED/USER_LIMIT_REACHED at the limit, ErrDuplicateRequest when
	// the request ID exists and ErrCommitUnknown like Coupons.Insert.
	InsertPending(ctx context.Context, c PendingClaim) error
	// PendingByRequest finds the pending coupon a request ID produced in
	// the phone's table, whichever phone it is for (Coupon.Phone says).
	PendingByRequest(ctx context.Context, p Phone, requestID string) (*Coupon, error)

	// AddBindIntent is step 0 of a move: it records (user, phone) in the
	// user's shard.
	AddBindIntent(ctx context.Context, userID int64, p Phone) error
	// MarkBind is step 1: it binds the phone to the user and marks the
	// phone's pending coupons with the user, or refuses with
	// EREFUSED/PHONE_BOUND_TO_OTHER_USER.
	MarkBind(ctx context.Context, userID int64, p Phone) error
	// CopyBound is step 2: it copies the marked coupons into the user's
	// shard (once each) and returns them as they stand there.
	CopyBound(ctx context.Context, userID int64, p Phone) ([]*Coupon, error)
	// DeleteBound is step 3: it deletes the copied coupons from the phone's shard.
	DeleteBound(ctx context.Context, userID int64, p Phone, ids []int64) error
	// RemoveBindIntent is step 4: it forgets the intent of step 0.
	RemoveBindIntent(ctx context.Context, userID int64, p Phone) error
	// BindIntents lists the phones with an intent of the user, usually none.
	BindIntents(ctx context.Context, userID int64) ([]Phone, error)
}

// Expirer is the storage side of the expiry sweep.
type Expirer interface {
	// ShardTables lists the coupon tables of each shard database.
	ShardTables() [][]int
	// ExpireBatch moves up to limit AVAILABLE coupons of one table whose
	// expiry is not after now to EXPIRED, earliest first, through the
	// (status, expire_at) index, and returns how many it moved. LOCKED
	// coupons are left alone: Release expires them when they come back.
	ExpireBatch(ctx context.Context, table int, now time.Time, limit int) (int, error)
	// EndTemplates moves ACTIVE and PAUSED templates whose window closed by
	// now to ENDED and returns their IDs.
	EndTemplates(ctx context.Context, now time.Time) ([]int64, error)
}

// Templates serves templates and their campaigns to the claim, TCC and
// user-side read paths without a catalog read per call (the template cache,
// participant/tplcache). A read may be stale, by at most a bound the
// implementation documents (about a second by default): an admin change
// reaches every replica within it. Invalidate ends the staleness of this
// replica at once. Templates and campaigns returned are shared and must not
// be modified; a reload replaces them with new ones, so the same pointer
// means the same version.
type Templates interface {
	// Get returns the template and its campaign; ENOTFOUND when either is
	// not in the catalog.
	Get(ctx context.Context, id int64) (*Template, *Campaign, error)
	// Cached is the template this replica holds, if any, without loading
	// it or counting a read; nil when it holds none.
	Cached(id int64) *Template
	// Invalidate drops the templates, after a change, so that the next Get
	// here loads them afresh and other replicas do on their next refresh.
	// This replica forgets them whatever the error; an error means the
	// other replicas may serve the old version until their shared copy
	// expires.
	Invalidate(ctx context.Context, ids ...int64) error
	// Counts returns the Gets served from memory (hits) and loaded
	// (misses) so far, for metrics.
	Counts() (hits, misses int64)
}

// Blobs is a shared cache of opaque values (Redis), the second level of the
// template cache. Each value has a stamp that every invalidation renews; a
// value is stored only under the stamp its reader saw before reading the
// source, so a slow reload can never overwrite a newer change.
type Blobs interface {
	GetBlob(ctx context.Context, key string) ([]byte, bool, error)
	// Stamp is the value's current stamp ("" when none).
	Stamp(ctx context.Context, key string) (string, error)
	// PutBlob stores v for ttl if the value's stamp is still stamp.
	PutBlob(ctx context.Context, key string, v []byte, ttl time.Duration, stamp string) (stored bool, err error)
	// DelBlobs drops values and renews their stamps.
	DelBlobs(ctx context.Context, keys ...string) error
}

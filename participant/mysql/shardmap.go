package mysql

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/go-sql-driver/mysql"

	"github.com/opencoupon/coupon/participant"
)

// The shard map routes a user (and a phone) to a coupon table and a shard
// database in two steps. The user ID hashes (splitmix64) to one of a fixed
// number of logical slots, chosen at the first migrate; each slot belongs
// to a table; the table, by its number, lives in shard database number /
// tables_per_shard. Both assignments are stored in the main database.
//
// The first migrate gives slot s to table s mod T (T the configured tables;
// with T dividing the slot count this is splitmix64(user) mod T, the
// routing before slots existed). After that the stored slot assignment
// stands: adding shard databases adds tables that own no slot until slots
// are moved to them, which is done slot by slot (a mover can come later;
// the map makes it possible). An explicit assignment (Config.SlotMap,
// `mysql.slot_map`) replaces the stored one. `coupon migrate` and `coupon
// serve` refuse any configuration — a slot assignment, tables_per_shard, the
// order of the shard databases — that would move a slot holding rows.

// DefaultSlots is the number of slots a first migrate picks when the
// configuration does not say.
const DefaultSlots = 1024

// SlotRange assigns slots Lo..Hi (inclusive) to table Table.
type SlotRange struct {
	Lo, Hi, Table int
}

// ParseSlotRange reads "LO-HI:TABLE" (or "SLOT:TABLE").
func ParseSlotRange(s string) (SlotRange, error) {
	span, table, ok := strings.Cut(strings.TrimSpace(s), ":")
	lo, hi, isRange := strings.Cut(span, "-")
	if !isRange {
		hi = lo
	}
	var r SlotRange
	var err1, err2, err3 error
	r.Lo, err1 = strconv.Atoi(lo)
	r.Hi, err2 = strconv.Atoi(hi)
	r.Table, err3 = strconv.Atoi(table)
	if !ok || err1 != nil || err2 != nil || err3 != nil || r.Lo < 0 || r.Hi < r.Lo || r.Table < 0 {
		return SlotRange{}, fmt.Errorf("slot range %q: want LO-HI:TABLE", s)
	}
	return r, nil
}

// shardMap is a configured or stored map.
type shardMap struct {
	slots  []int // slot → table
	tables []int // table → shard database index
}

func (m shardMap) equal(o shardMap) bool {
	return slices.Equal(m.slots, o.slots) && slices.Equal(m.tables, o.tables)
}

// configuredMap is the map cfg describes. Without an explicit slot map its
// slots are nil: the stored assignment stands (or, before the first
// migrate, the default one).
func configuredMap(cfg Config) (shardMap, error) {
	tables := cfg.TablesPerShard * len(cfg.ShardDSNs)
	m := shardMap{tables: make([]int, tables)}
	for t := range m.tables {
		m.tables[t] = t / cfg.TablesPerShard
	}
	if cfg.Slots < 0 || cfg.Slots > maxSlots {
		return shardMap{}, fmt.Errorf("mysql: slots %d out of range 0..%d", cfg.Slots, maxSlots)
	}
	if len(cfg.SlotMap) == 0 {
		return m, nil
	}
	slots := cfg.Slots
	if slots == 0 {
		slots = DefaultSlots
	}
	m.slots = make([]int, slots)
	for s := range m.slots {
		m.slots[s] = -1
	}
	for _, r := range cfg.SlotMap {
		if r.Hi >= slots || r.Table >= tables {
			return shardMap{}, fmt.Errorf("mysql: slot range %d-%d:%d outside %d slots and %d tables", r.Lo, r.Hi, r.Table, slots, tables)
		}
		for s := r.Lo; s <= r.Hi; s++ {
			if m.slots[s] != -1 {
				return shardMap{}, fmt.Errorf("mysql: slot %d is assigned twice in mysql.slot_map", s)
			}
			m.slots[s] = r.Table
		}
	}
	if s := slices.Index(m.slots, -1); s >= 0 {
		return shardMap{}, fmt.Errorf("mysql: slot %d is not assigned to a table in mysql.slot_map", s)
	}
	return m, nil
}

const maxSlots = 1 << 20

// defaultSlots gives n slots to the tables round-robin.
func defaultSlots(n, tables int) []int {
	out := make([]int, n)
	for s := range out {
		out[s] = s % tables
	}
	return out
}

// resolve fills the slot assignment of the configured map from the stored
// map (when the configuration names none) or the default, and checks it
// against the configured tables.
func (m *shardMap) resolve(cfg Config, stored shardMap, haveStored bool) error {
	if haveStored && cfg.Slots != 0 && cfg.Slots != len(stored.slots) {
		return fmt.Errorf("mysql: the shard map has %d slots, fixed at the first migrate; the configuration says %d (mysql.slots)", len(stored.slots), cfg.Slots)
	}
	if m.slots == nil {
		switch {
		case haveStored:
			m.slots = slices.Clone(stored.slots)
		default:
			n := cfg.Slots
			if n == 0 {
				n = DefaultSlots
			}
			if n < len(m.tables) {
				return fmt.Errorf("mysql: %d slots cannot spread over %d tables", n, len(m.tables))
			}
			m.slots = defaultSlots(n, len(m.tables))
		}
	}
	if haveStored && len(m.slots) != len(stored.slots) {
		return fmt.Errorf("mysql: the shard map has %d slots, fixed at the first migrate; mysql.slot_map assigns %d", len(stored.slots), len(m.slots))
	}
	for slot, t := range m.slots {
		if t >= len(m.tables) {
			return fmt.Errorf("mysql: slot %d belongs to coupon table %04d, which the configuration (%d tables) does not have: keep the shard databases and mysql.tables_per_shard, or move the slot first", slot, t, len(m.tables))
		}
	}
	return nil
}

func mix(v int64) uint64 {
	z := uint64(v) + 0x9e3779b97f4a7c15
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// slotOf is the slot of a user ID or phone number among n slots.
func slotOf(v int64, n int) int { return int(mix(v) % uint64(n)) }

// ShardMap answers where rows live: users and phones hash to slots, slots
// belong to coupon tables and tables to shard databases.
type ShardMap struct{ *shards }

// SlotTable is the table slot belongs to.
func (m *ShardMap) SlotTable(slot int) int { return m.smap.slots[slot] }

// SlotOf is the user's slot.
func (m *ShardMap) SlotOf(userID int64) int { return m.slotOf(userID) }

// Slots is the number of slots.
func (m *ShardMap) Slots() int { return len(m.smap.slots) }

// TableOf is the coupon table holding the user's coupons.
func (m *ShardMap) TableOf(userID int64) int { return m.ofUser(userID).table }

// Tables is the total number of coupon tables.
func (m *ShardMap) Tables() int { return m.tables() }

// TablesOf lists the global table numbers in shard database i.
func (m *ShardMap) TablesOf(i int) []int { return m.tablesOf(i) }

// slotOf is the slot of a user ID or a phone's number.
func (s *shards) slotOf(v int64) int { return slotOf(v, len(s.smap.slots)) }

// ofUser routes a user to their shard.
func (s *shards) ofUser(userID int64) shard { return s.ofKey(userID) }

// ofPhone routes a phone number to its shard: a pure function of the
// normalised number, as ofUser routes a user.
func (s *shards) ofPhone(p participant.Phone) shard { return s.ofKey(p.Number()) }

func (s *shards) ofKey(v int64) shard {
	t := s.smap.slots[slotOf(v, len(s.smap.slots))]
	i := s.smap.tables[t]
	return shard{db: s.dbs[i], index: i, table: t}
}

// loadMap reads the stored map; ok is false before the first migrate.
func loadMap(ctx context.Context, main *sql.DB) (shardMap, bool, error) {
	var n int
	err := main.QueryRowContext(ctx, `SELECT value FROM shard_meta WHERE name = 'slots'`).Scan(&n)
	if errors.Is(err, sql.ErrNoRows) || isNoTable(err) {
		return shardMap{}, false, nil
	}
	if err != nil {
		return shardMap{}, false, err
	}
	m := shardMap{slots: make([]int, n)}
	rows, err := main.QueryContext(ctx, `SELECT slot, table_no FROM shard_slot ORDER BY slot`)
	if err != nil {
		return shardMap{}, false, err
	}
	seen := 0
	for rows.Next() {
		var slot, table int
		if err := rows.Scan(&slot, &table); err != nil {
			rows.Close()
			return shardMap{}, false, err
		}
		if slot < 0 || slot >= n {
			rows.Close()
			return shardMap{}, false, fmt.Errorf("stored shard map: slot %d outside %d slots", slot, n)
		}
		m.slots[slot] = table
		seen++
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return shardMap{}, false, err
	}
	if seen != n {
		return shardMap{}, false, fmt.Errorf("stored shard map: %d of %d slots assigned", seen, n)
	}
	rows, err = main.QueryContext(ctx, `SELECT table_no, shard_index FROM shard_table ORDER BY table_no`)
	if err != nil {
		return shardMap{}, false, err
	}
	defer rows.Close()
	for rows.Next() {
		var table, idx int
		if err := rows.Scan(&table, &idx); err != nil {
			return shardMap{}, false, err
		}
		if table != len(m.tables) {
			return shardMap{}, false, fmt.Errorf("stored shard map: table %d out of order", table)
		}
		m.tables = append(m.tables, idx)
	}
	return m, true, rows.Err()
}

func isNoTable(err error) bool {
	var me *mysql.MySQLError
	return errors.As(err, &me) && me.Number == 1146
}

// Verify checks, before serving, that the map the service routes
// by is the stored one. A map that would move a slot holding rows is
// refused with the rows it would strand; another change must be adopted by
// `coupon migrate` first, so that every replica routes alike.
func (m *ShardMap) Verify(ctx context.Context) error {
	return m.verify(ctx)
}

func (s *shards) verify(ctx context.Context) error {
	stored, ok, err := loadMap(ctx, s.main)
	if err != nil {
		return fmt.Errorf("read shard map: %w", err)
	}
	if !ok {
		return errors.New("the main database has no shard map: run coupon migrate first")
	}
	if stored.equal(s.smap) {
		return nil
	}
	if err := s.checkNoMoves(ctx); err != nil {
		return err
	}
	return errors.New("the configured shard map differs from the stored one (no rows would move): run coupon migrate to adopt it")
}

// saveShardMap stores the map after checking that it moves no slot
// holding rows; the first migrate also fixes the number of slots.
func (s *shards) saveShardMap(ctx context.Context) error {
	stored, ok, err := loadMap(ctx, s.main)
	if err != nil {
		return fmt.Errorf("read shard map: %w", err)
	}
	if ok && stored.equal(s.smap) {
		return nil
	}
	// First migrate included: rows written before the map was stored
	// must already sit where it puts them.
	if err := s.checkNoMoves(ctx); err != nil {
		return err
	}
	return s.inTx(ctx, s.main, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO shard_meta (name, value) VALUES ('slots', ?) ON DUPLICATE KEY UPDATE value = VALUES(value)`,
			len(s.smap.slots)); err != nil {
			return err
		}
		for _, q := range []string{`DELETE FROM shard_slot`, `DELETE FROM shard_table`} {
			if _, err := tx.ExecContext(ctx, q); err != nil {
				return err
			}
		}
		const chunk = 512
		for lo := 0; lo < len(s.smap.slots); lo += chunk {
			hi := min(lo+chunk, len(s.smap.slots))
			args := make([]any, 0, 2*(hi-lo))
			for slot := lo; slot < hi; slot++ {
				args = append(args, slot, s.smap.slots[slot])
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO shard_slot (slot, table_no) VALUES `+placeholders("(?,?)", hi-lo), args...); err != nil {
				return err
			}
		}
		args := make([]any, 0, 2*len(s.smap.tables))
		for t, idx := range s.smap.tables {
			args = append(args, t, idx)
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO shard_table (table_no, shard_index) VALUES `+placeholders("(?,?)", len(s.smap.tables)), args...)
		return err
	})
}

// Misplaced is a row the configured map would route elsewhere.
type Misplaced struct {
	Slot      int
	Key       string // "user 42" or "phone +86138****8000"
	Table     string // where it is, e.g. "coupon_0003 of shard 0"
	WantTable int
	WantShard int
}

// keyed are the tables whose rows route by a user or a phone.
var keyed = []struct {
	re    *regexp.Regexp
	query string // %s is the table
	phone bool
}{
	{regexp.MustCompile(`^coupon_([0-9]{4})$`), "SELECT DISTINCT user_id FROM %s", false},
	{regexp.MustCompile(`^claim_count_([0-9]{4})$`), "SELECT DISTINCT user_id FROM %s", false},
	{regexp.MustCompile(`^bind_intent_([0-9]{4})$`), "SELECT DISTINCT user_id FROM %s", false},
	{regexp.MustCompile(`^phone_([0-9]{4})$`), "SELECT phone FROM %s", true},
	{regexp.MustCompile(`^pending_coupon_([0-9]{4})$`), "SELECT DISTINCT phone FROM %s", true},
}

// checkNoMoves scans every shard database for rows the configured map
// would route to another table or database, and refuses naming the first
// few.
func (s *shards) checkNoMoves(ctx context.Context) error {
	found, err := s.misplaced(ctx, 5)
	if err != nil {
		return fmt.Errorf("check the shard map against the rows: %w", err)
	}
	if len(found) == 0 {
		return nil
	}
	var b strings.Builder
	fmt.Fprintf(&b, "the configured shard map would move slots that hold rows (a slot moves only with its rows, by a reshard; keep the map — mysql.shard_dsns, mysql.tables_per_shard, mysql.slot_map — or move the rows first):")
	for _, m := range found {
		fmt.Fprintf(&b, "\n  slot %d: %s in %s would go to coupon table %04d in shard %d", m.Slot, m.Key, m.Table, m.WantTable, m.WantShard)
	}
	return errors.New(b.String())
}

// misplaced lists up to limit rows that the configured map would route to
// another table or shard database.
func (s *shards) misplaced(ctx context.Context, limit int) ([]Misplaced, error) {
	var out []Misplaced
	for idx, db := range s.dbs {
		names, err := tableNames(ctx, db)
		if err != nil {
			return nil, err
		}
		for _, name := range names {
			if name == "daily_use" {
				// Per database: a user's counts must stay in their database.
				err := scanKeys(ctx, db, "SELECT DISTINCT user_id FROM daily_use", func(v int64) bool {
					sh := s.ofKey(v)
					if sh.index != idx {
						out = append(out, Misplaced{Slot: s.slotOf(v), Key: fmt.Sprintf("user %d", v), Table: fmt.Sprintf("daily_use of shard %d", idx),
							WantTable: sh.table, WantShard: sh.index})
					}
					return len(out) < limit
				})
				if err != nil || len(out) >= limit {
					return out, err
				}
				continue
			}
			for _, k := range keyed {
				m := k.re.FindStringSubmatch(name)
				if m == nil {
					continue
				}
				table, _ := strconv.Atoi(m[1])
				err := scanKeys(ctx, db, fmt.Sprintf(k.query, name), func(v int64) bool {
					sh := s.ofKey(v)
					if sh.table != table || sh.index != idx {
						key := fmt.Sprintf("user %d", v)
						if k.phone {
							key = "phone " + participant.Phone("+"+strconv.FormatInt(v, 10)).Masked()
						}
						out = append(out, Misplaced{Slot: slotOf(v, len(s.smap.slots)), Key: key, Table: fmt.Sprintf("%s of shard %d", name, idx),
							WantTable: sh.table, WantShard: sh.index})
					}
					return len(out) < limit
				})
				if err != nil || len(out) >= limit {
					return out, err
				}
			}
		}
	}
	return out, nil
}

func tableNames(ctx context.Context, db *sql.DB) ([]string, error) {
	rows, err := db.QueryContext(ctx, `SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE() ORDER BY table_name`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, rows.Err()
}

// scanKeys streams a query's first column as user IDs, or as phone numbers
// ("+8613800138000" → 8613800138000), until more returns false.
func scanKeys(ctx context.Context, db *sql.DB, q string, more func(int64) bool) error {
	rows, err := db.QueryContext(ctx, q)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var raw string
		if err := rows.Scan(&raw); err != nil {
			return err
		}
		v, err := strconv.ParseInt(strings.TrimPrefix(raw, "+"), 10, 64)
		if err != nil {
			return fmt.Errorf("%s: key %q is not a number", q, raw)
		}
		if !more(v) {
			return nil
		}
	}
	return rows.Err()
}

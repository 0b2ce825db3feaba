// Package config is the coupon command's configuration: every key, its
// default and what it means, described once in keys.go. Load reads the keys
// with one viper instance into the server's app.Config and the reconcile
// command's Reconcile; Reference writes the same description as the
// markdown of docs/configuration.md.
package config

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/viper"

	"github.com/opencoupon/coupon/internal/app"
	couponmysql "github.com/opencoupon/coupon/participant/mysql"
)

// EnvPrefix starts every environment variable: key grpc.addr is
// COUPON_GRPC_ADDR.
const EnvPrefix = "COUPON"

// Config is what the coupon command reads.
type Config struct {
	// App is the server's configuration (serve and migrate).
	App app.Config
	// LogLevel is slog's level name.
	LogLevel string
	// Reconcile is the reconcile command's keys.
	Reconcile Reconcile
}

// Reconcile is the reconcile.* keys. The service's keys it leans on (the
// shards, the main database, the gRPC address) are in Config.App.
type Reconcile struct {
	Source      string
	OrdersDSN   string
	PaymentsDSN string
	// StateDSN empty means the coupon main database; "none" runs without state.
	StateDSN    string
	Zone        string
	Grace       time.Duration
	PendingDays int
	OutDir      string
	SpillDir    string
	// MemoryLimit is the Go soft memory limit in bytes; 0 leaves it unset.
	MemoryLimit      uint
	DTMHTTP          string
	DTMGRPC          string
	DTMTimeoutToFail time.Duration
	DTMRetryBudget   time.Duration
	CouponAddr       string
	CouponToken      string
	Schedule         string
	ScheduleRepair   string
	Lease            time.Duration
}

// Key is one configuration key.
type Key struct {
	// Name is the dotted key of the YAML file.
	Name string
	// Default is the value when neither the file nor the environment sets
	// the key; a sameAs names another key whose value it takes.
	Default any
	// load reads the key's value from v into its field.
	load loader
	// Help says what the key does, in one line of markdown.
	Help string
}

// Env is the environment variable that overrides the key.
func (k Key) Env() string {
	return EnvPrefix + "_" + strings.ToUpper(strings.ReplaceAll(k.Name, ".", "_"))
}

// Section is the key's top-level name, which groups it in the reference.
func (k Key) Section() string {
	s, _, _ := strings.Cut(k.Name, ".")
	return s
}

// sameAs is the default of a key that, unset, takes another key's value.
type sameAs string

// Keys describes every key; the keys are not bound to a Config (Load binds
// them to the one it fills).
func Keys() []Key { return keys(new(Config)) }

// Load reads file (optional, YAML) over the defaults, with COUPON_*
// environment overrides (key grpc.addr ← COUPON_GRPC_ADDR; lists
// comma-separated; lists of objects and maps as JSON).
func Load(file string) (Config, error) {
	var c Config
	ks := keys(&c)
	v := viper.New()
	for _, k := range ks {
		if _, ok := k.Default.(sameAs); !ok {
			v.SetDefault(k.Name, k.Default)
		}
	}
	v.SetEnvPrefix(EnvPrefix)
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_"))
	v.AutomaticEnv()
	if file != "" {
		v.SetConfigFile(file)
		if err := v.ReadInConfig(); err != nil {
			return Config{}, fmt.Errorf("read config %s: %w", file, err)
		}
	}
	// A key that defaults to another's value takes it as that key was
	// finally set (file or environment).
	for _, k := range ks {
		if other, ok := k.Default.(sameAs); ok {
			v.SetDefault(k.Name, v.Get(string(other)))
		}
	}
	for _, k := range ks {
		if err := k.load(v, k.Name); err != nil {
			return Config{}, err
		}
	}
	return c, nil
}

// loader reads one key into the field it is bound to.
type loader func(v *viper.Viper, key string) error

// to binds a key to a field, read with viper's getter of the field's type.
func to[T any](p *T) loader {
	var read func(*viper.Viper, string) any
	switch any(p).(type) {
	case *string:
		read = func(v *viper.Viper, k string) any { return v.GetString(k) }
	case *bool:
		read = func(v *viper.Viper, k string) any { return v.GetBool(k) }
	case *int:
		read = func(v *viper.Viper, k string) any { return v.GetInt(k) }
	case *int32:
		read = func(v *viper.Viper, k string) any { return v.GetInt32(k) }
	case *int64:
		read = func(v *viper.Viper, k string) any { return v.GetInt64(k) }
	case *uint32:
		read = func(v *viper.Viper, k string) any { return v.GetUint32(k) }
	case *float64:
		read = func(v *viper.Viper, k string) any { return v.GetFloat64(k) }
	case *time.Duration:
		read = func(v *viper.Viper, k string) any { return v.GetDuration(k) }
	case *[]string:
		read = func(v *viper.Viper, k string) any { return list(v, k) }
	default:
		panic(fmt.Sprintf("config: no getter for %T", p))
	}
	return func(v *viper.Viper, k string) error {
		*p = read(v, k).(T)
		return nil
	}
}

// offIfZero binds a key whose configured 0 means "no bound" to a field of
// app.Config, where 0 means "the default" and a negative value "off".
func offIfZero[T int | float64 | time.Duration](p *T) loader {
	read := to(p)
	return func(v *viper.Viper, k string) error {
		if err := read(v, k); err != nil {
			return err
		}
		if *p == 0 {
			*p = -1
		}
		return nil
	}
}

// both binds one key to several fields.
func both(ls ...loader) loader {
	return func(v *viper.Viper, k string) error {
		for _, l := range ls {
			if err := l(v, k); err != nil {
				return err
			}
		}
		return nil
	}
}

// size binds a size such as "200MiB" with viper's reading of sizes.
func size(p *uint) loader {
	return func(v *viper.Viper, k string) error {
		n, err := parseSize(v.GetString(k))
		if err != nil {
			return fmt.Errorf("%s: %w", k, err)
		}
		*p = n
		return nil
	}
}

// sizeUnits are the units parseSize reads, longest first: binary, with
// KB, MB, GB and K, M, G read as the same powers of 1024.
var sizeUnits = []struct {
	suffix string
	mult   uint64
}{
	{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30},
	{"kb", 1 << 10}, {"mb", 1 << 20}, {"gb", 1 << 30},
	{"k", 1 << 10}, {"m", 1 << 20}, {"g", 1 << 30}, {"b", 1},
}

// parseSize reads a byte count: a whole number with an optional unit
// (case-insensitive); "" is 0. Anything else is refused rather than read
// as 0, which viper's GetSizeInBytes did with "200MiB".
func parseSize(s string) (uint, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	if t == "" {
		return 0, nil
	}
	mult := uint64(1)
	for _, u := range sizeUnits {
		if rest, ok := strings.CutSuffix(t, u.suffix); ok {
			t, mult = strings.TrimSpace(rest), u.mult
			break
		}
	}
	n, err := strconv.ParseUint(t, 10, 64)
	if err != nil || n > math.MaxUint64/mult || n*mult > uint64(^uint(0)) {
		return 0, fmt.Errorf("size %q: want a whole number of bytes with an optional unit (KiB, MiB, GiB)", s)
	}
	return uint(n * mult), nil
}

// list reads a list of strings; an element may itself be comma-separated,
// as every element of an environment variable is.
func list(v *viper.Viper, key string) []string {
	var out []string
	for _, s := range v.GetStringSlice(key) {
		for _, p := range strings.Split(s, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
	}
	return out
}

// slotMap binds mysql.slot_map, a list of LO-HI:TABLE entries.
func slotMap(p *[]couponmysql.SlotRange) loader {
	return func(v *viper.Viper, k string) error {
		for _, r := range list(v, k) {
			sr, err := couponmysql.ParseSlotRange(r)
			if err != nil {
				return fmt.Errorf("%s: %w", k, err)
			}
			*p = append(*p, sr)
		}
		return nil
	}
}

// objects binds a list of objects: from YAML, or from its environment
// variable as JSON (COUPON_AUTH_CALLERS='[{"identity":...}]').
func objects[T any](p *[]T) loader {
	return func(v *viper.Viper, k string) error {
		if s, ok := v.Get(k).(string); ok {
			if strings.TrimSpace(s) == "" {
				return nil
			}
			if err := json.Unmarshal([]byte(s), p); err != nil {
				return fmt.Errorf("%s: not a JSON list: %w", k, err)
			}
			return nil
		}
		if err := v.UnmarshalKey(k, p); err != nil {
			return fmt.Errorf("%s: %w", k, err)
		}
		return nil
	}
}

// durations binds a map of method to duration.
func durations(p *map[string]time.Duration) loader {
	return func(v *viper.Viper, k string) error {
		out := map[string]time.Duration{}
		for m, s := range v.GetStringMapString(k) {
			d, err := time.ParseDuration(s)
			if err != nil {
				return fmt.Errorf("%s.%s: %w", k, m, err)
			}
			out[m] = d
		}
		*p = out
		return nil
	}
}

// ints binds a map of method to number.
func ints(p *map[string]int) loader {
	return func(v *viper.Viper, k string) error {
		out := map[string]int{}
		for m := range v.GetStringMap(k) {
			out[m] = v.GetInt(k + "." + m)
		}
		*p = out
		return nil
	}
}

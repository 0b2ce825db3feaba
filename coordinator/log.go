package coordinator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	dtmlogger "github.com/dtm-labs/logger"
	"gorm.io/gorm"
	gormlogger "gorm.io/gorm/logger"
)

// slowSQL is when gorm's statements are worth a warning.
const slowSQL = 500 * time.Millisecond

// routeLogs sends DTM's and gorm's logs to log, from level up, with
// credentials redacted (redactText): DTM logs requests, transactions and
// SQL with their branch headers in them. Both are process globals; DTM's
// zap logger and gorm's stdout logger would otherwise write unstructured
// lines.
func routeLogs(log *slog.Logger, level slog.Level) {
	dtmlogger.WithLogger(dtmLog{log: log.With("component", "dtm"), level: level})
	gormlogger.Default = gormLog{log: log.With("component", "gorm"), level: level}
}

// dtmLog adapts slog to DTM's logger interface. Messages below level are
// dropped before they are formatted: DTM logs a lot at info and debug.
type dtmLog struct {
	log   *slog.Logger
	level slog.Level
}

func (l dtmLog) Debugf(format string, args ...any) { l.logf(slog.LevelDebug, format, args) }
func (l dtmLog) Infof(format string, args ...any)  { l.logf(slog.LevelInfo, format, args) }
func (l dtmLog) Warnf(format string, args ...any)  { l.logf(slog.LevelWarn, format, args) }
func (l dtmLog) Errorf(format string, args ...any) { l.logf(slog.LevelError, format, args) }

func (l dtmLog) logf(level slog.Level, format string, args []any) {
	if level < l.level || !l.log.Enabled(context.Background(), level) {
		return
	}
	l.log.Log(context.Background(), level, redactText(fmt.Sprintf(format, args...)))
}

// gormLog adapts slog to gorm's logger. SQL errors are logged at warn: DTM
// turns them into its own errors and logs those where they matter.
type gormLog struct {
	log   *slog.Logger
	level slog.Level
}

func (l gormLog) LogMode(gormlogger.LogLevel) gormlogger.Interface { return l }

func (l gormLog) Info(ctx context.Context, msg string, args ...any) {
	l.logf(ctx, slog.LevelInfo, msg, args)
}

func (l gormLog) Warn(ctx context.Context, msg string, args ...any) {
	l.logf(ctx, slog.LevelWarn, msg, args)
}

func (l gormLog) Error(ctx context.Context, msg string, args ...any) {
	l.logf(ctx, slog.LevelError, msg, args)
}

func (l gormLog) logf(ctx context.Context, level slog.Level, msg string, args []any) {
	if level < l.level || !l.log.Enabled(ctx, level) {
		return
	}
	l.log.Log(ctx, level, redactText(fmt.Sprintf(msg, args...)))
}

func (l gormLog) Trace(ctx context.Context, begin time.Time, fc func() (string, int64), err error) {
	elapsed := time.Since(begin)
	switch {
	case err != nil && !errors.Is(err, gorm.ErrRecordNotFound):
		if slog.LevelWarn >= l.level && l.log.Enabled(ctx, slog.LevelWarn) {
			sql, rows := fc()
			l.log.WarnContext(ctx, "sql failed", "sql", redactText(sql), "rows", rows, "elapsed", elapsed, "err", redactText(err.Error()))
		}
	case elapsed > slowSQL:
		if slog.LevelWarn >= l.level && l.log.Enabled(ctx, slog.LevelWarn) {
			sql, rows := fc()
			l.log.WarnContext(ctx, "slow sql", "sql", redactText(sql), "rows", rows, "elapsed", elapsed)
		}
	case slog.LevelDebug >= l.level && l.log.Enabled(ctx, slog.LevelDebug):
		sql, rows := fc()
		l.log.DebugContext(ctx, "sql", "sql", redactText(sql), "rows", rows, "elapsed", elapsed)
	}
}

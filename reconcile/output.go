package reconcile

import (
	"bufio"
	"errors"
	"fmt"
	"html/template"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Output file names inside --out.
const (
	FileDiscrepancies = "discrepancies.jsonl"
	FilePending       = "pending.jsonl"
	FileSummary       = "summary.md"
	FileReport        = "report.html"
	FileRepairs       = "repairs.jsonl"
)

// OutputDir builds a run's output directory next to its final place and
// moves it there in one rename, so readers see all of a run or none of it.
type OutputDir struct {
	final string
	tmp   string
	files []*os.File
	bufs  []*bufio.Writer
}

// CreateOutput starts an output directory that Commit moves to out.
func CreateOutput(out string) (*OutputDir, error) {
	abs, err := filepath.Abs(out)
	if err != nil {
		return nil, fmt.Errorf("output %s: %w", out, err)
	}
	parent := filepath.Dir(abs)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return nil, fmt.Errorf("output %s: %w", out, err)
	}
	if fi, err := os.Stat(abs); err == nil && !fi.IsDir() {
		return nil, fmt.Errorf("output %s exists and is not a directory", out)
	}
	tmp, err := os.MkdirTemp(parent, "."+filepath.Base(abs)+".tmp-")
	if err != nil {
		return nil, fmt.Errorf("output %s: %w", out, err)
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		_ = os.RemoveAll(tmp)
		return nil, fmt.Errorf("output %s: %w", out, err)
	}
	return &OutputDir{final: abs, tmp: tmp}, nil
}

// Path is where the directory will be once committed.
func (d *OutputDir) Path() string { return d.final }

// Create opens a buffered file of the directory; Commit flushes it.
func (d *OutputDir) Create(name string) (io.Writer, error) {
	f, err := os.Create(filepath.Join(d.tmp, name))
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", name, err)
	}
	b := bufio.NewWriterSize(f, 256<<10)
	d.files, d.bufs = append(d.files, f), append(d.bufs, b)
	return b, nil
}

// Open reopens a file already written (after Flush) for reading.
func (d *OutputDir) Open(name string) (*os.File, error) {
	return os.Open(filepath.Join(d.tmp, name))
}

// Flush writes out every buffered file.
func (d *OutputDir) Flush() error {
	for _, b := range d.bufs {
		if err := b.Flush(); err != nil {
			return fmt.Errorf("write output: %w", err)
		}
	}
	return nil
}

// WriteReports writes summary.md and report.html for res.
func (d *OutputDir) WriteReports(res *Result) error {
	if err := os.WriteFile(filepath.Join(d.tmp, FileSummary), []byte(Summary(res)), 0o644); err != nil {
		return fmt.Errorf("write summary: %w", err)
	}
	f, err := os.Create(filepath.Join(d.tmp, FileReport))
	if err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	if err := WriteHTML(f, res); err != nil {
		f.Close()
		return fmt.Errorf("write report: %w", err)
	}
	return f.Close()
}

// Commit syncs the files and moves the directory to its place, replacing
// an earlier run's directory there.
func (d *OutputDir) Commit() error {
	if err := d.Flush(); err != nil {
		return err
	}
	for _, f := range d.files {
		if err := f.Sync(); err != nil {
			return fmt.Errorf("sync output: %w", err)
		}
		if err := f.Close(); err != nil {
			return fmt.Errorf("close output: %w", err)
		}
	}
	d.files, d.bufs = nil, nil
	if err := replaceDir(d.tmp, d.final); err != nil {
		return fmt.Errorf("move output into %s: %w", d.final, err)
	}
	d.tmp = ""
	return nil
}

// Abort removes the unfinished directory.
func (d *OutputDir) Abort() {
	for _, f := range d.files {
		_ = f.Close()
	}
	d.files, d.bufs = nil, nil
	if d.tmp != "" {
		_ = os.RemoveAll(d.tmp)
		d.tmp = ""
	}
}

// replaceDir moves src to dst. An existing dst is swapped out atomically
// where the system can (Linux), then removed.
func replaceDir(src, dst string) error {
	err := os.Rename(src, dst)
	if err == nil {
		return nil
	}
	if _, serr := os.Stat(dst); serr != nil {
		return err
	}
	if xerr := exchange(src, dst); xerr == nil {
		return os.RemoveAll(src) // src now holds the old directory
	} else if !errors.Is(xerr, errNoExchange) {
		return xerr
	}
	old := src + ".old"
	if err := os.Rename(dst, old); err != nil {
		return err
	}
	if err := os.Rename(src, dst); err != nil {
		_ = os.Rename(old, dst)
		return err
	}
	return os.RemoveAll(old)
}

var errNoExchange = errors.New("atomic exchange not supported")

// Money formats minor units with thousands separators.
func Money(v int64) string {
	s := fmt.Sprint(abs(v))
	var b strings.Builder
	if v < 0 {
		b.WriteByte('-')
	}
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// Summary renders summary.md.
func Summary(res *Result) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# Reconciliation %s\n\n", res.Date)
	fmt.Fprintf(&b, "- Window: %s to %s, judged as of %s (grace %s)\n", res.Start.Format(time.RFC3339), res.End.Format(time.RFC3339), res.AsOf.Format(time.RFC3339), res.Grace)
	fmt.Fprintf(&b, "- Rows read: %s orders, %s payments, %s coupon ledger rows (%s in the window); %d pending orders carried from the previous run\n",
		Money(res.Rows.Orders), Money(res.Rows.Payments), Money(res.Rows.Ledger), Money(res.Rows.InWindow), res.Rows.Carried)
	fmt.Fprintf(&b, "- Findings: **%d open**, %d resolved by repairs (%d repairs applied for this date); money at risk (open, minor units): **%s**\n",
		res.Open, res.Resolved, len(res.Repaired), Money(res.MoneyAtRisk))
	fmt.Fprintf(&b, "- Pending (in flight at as-of, re-checked by the next day's run): %d\n\n", res.Pending)
	b.WriteString("| Class | Findings | Open | Resolved | Money at risk |\n|---|--:|--:|--:|--:|\n")
	for _, c := range Classes {
		t := res.Totals[c]
		fmt.Fprintf(&b, "| %s | %d | %d | %d | %s |\n", c, t.Count, t.Open, t.Resolved, Money(t.AmountAtRisk))
	}
	fmt.Fprintf(&b, "| **Total** | %d | %d | %d | %s |\n\n", res.Findings, res.Open, res.Resolved, Money(res.MoneyAtRisk))
	if len(res.Repaired) > 0 {
		fmt.Fprintf(&b, "## Resolved by repairs (%d)\n\n| Class | Order | Coupon | Resolution |\n|---|---|---|---|\n", len(res.Repaired))
		for _, r := range res.Repaired {
			fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", r.Class, mdCell(r.OrderNo), mdCell(r.CouponCode), mdCell(r.Resolution))
		}
		b.WriteString("\n")
	}
	if len(res.Top) > 0 {
		n := min(len(res.Top), 20)
		fmt.Fprintf(&b, "## Largest %d findings\n\n| Class | Order | Coupon | At risk | Detail |\n|---|---|---|--:|---|\n", n)
		for _, f := range res.Top[:n] {
			detail := f.Detail
			if f.Resolution != "" {
				detail = "resolved: " + f.Resolution + "; " + detail
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", f.Class, mdCell(f.OrderNo), mdCell(f.CouponCode), Money(f.AmountAtRisk), mdCell(detail))
		}
		b.WriteString("\nEvery finding is in " + FileDiscrepancies + "; report.html has a searchable table.\n")
	}
	return b.String()
}

func mdCell(s string) string {
	return strings.NewReplacer("|", `\|`, "\n", " ").Replace(s)
}

type chartBar struct {
	Class       string
	Count       int64
	Risk        string
	Y, W, TextX int
}

// WriteHTML renders report.html: self-contained (inline CSS, SVG and a
// few lines of JS), so it opens from file:// with no server or network.
func WriteHTML(w io.Writer, res *Result) error {
	var maxCount int64 = 1
	for _, c := range Classes {
		maxCount = max(maxCount, res.Totals[c].Count)
	}
	var bars []chartBar
	for i, c := range Classes {
		t := res.Totals[c]
		width := int(t.Count * 420 / maxCount)
		if t.Count > 0 && width < 2 {
			width = 2
		}
		bars = append(bars, chartBar{Class: c, Count: t.Count, Risk: Money(t.AmountAtRisk), Y: i * 30, W: width, TextX: 250 + width + 8})
	}
	return reportTemplate.Execute(w, map[string]any{
		"R": res, "Classes": Classes, "Bars": bars, "ChartHeight": len(Classes) * 30,
		"Money": Money, "Generated": time.Now().UTC().Format(time.RFC3339),
	})
}

var reportTemplate = template.Must(template.New("report").Funcs(template.FuncMap{
	"money": Money,
	"total": func(r *Result, c string) *ClassTotal { return r.Totals[c] },
	"rfc":   func(t time.Time) string { return t.Format(time.RFC3339) },
}).Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Reconciliation {{.R.Date}}</title>
<style>
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px;color:#1b1f24}
h1{font-size:22px;margin:0 0 4px}
.meta{color:#57606a;margin-bottom:16px}
.cards{display:flex;gap:12px;flex-wrap:wrap;margin:12px 0 20px}
.card{border:1px solid #d0d7de;border-radius:6px;padding:10px 14px;min-width:150px}
.card b{display:block;font-size:20px}
table{border-collapse:collapse;width:100%}
th,td{border-bottom:1px solid #d8dee4;padding:5px 8px;text-align:left;vertical-align:top}
th{background:#f6f8fa;position:sticky;top:0}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
tr.resolved td{color:#8c959f}
#q{padding:6px 8px;width:320px;font-size:14px}
.note{color:#57606a}
svg text{font:12px system-ui,sans-serif}
</style>
</head>
<body>
<h1>Reconciliation {{.R.Date}}</h1>
<div class="meta">Window {{rfc .R.Start}} to {{rfc .R.End}}, judged as of {{rfc .R.AsOf}} (grace {{.R.Grace}}). Generated {{.Generated}}.</div>
<div class="cards">
<div class="card">Open findings<b id="open">{{.R.Open}}</b></div>
<div class="card">Money at risk (minor units)<b id="risk">{{money .R.MoneyAtRisk}}</b></div>
<div class="card">Resolved by repairs<b>{{len .R.Repaired}}</b></div>
<div class="card">Pending, re-checked tomorrow<b>{{.R.Pending}}</b></div>
<div class="card">Rows read<b>{{money .R.Rows.Orders}} / {{money .R.Rows.Payments}} / {{money .R.Rows.Ledger}}</b>orders / payments / coupon ledger</div>
</div>
<h2>Totals per class</h2>
<table id="totals">
<thead><tr><th>Class</th><th class="n">Findings</th><th class="n">Open</th><th class="n">Resolved</th><th class="n">Money at risk</th></tr></thead>
<tbody>
{{range .Classes}}{{$t := total $.R .}}<tr><td>{{.}}</td><td class="n">{{$t.Count}}</td><td class="n">{{$t.Open}}</td><td class="n">{{$t.Resolved}}</td><td class="n">{{money $t.AmountAtRisk}}</td></tr>
{{end}}<tr><th>Total</th><th class="n">{{.R.Findings}}</th><th class="n">{{.R.Open}}</th><th class="n">{{.R.Resolved}}</th><th class="n">{{money .R.MoneyAtRisk}}</th></tr>
</tbody>
</table>
{{if .R.Repaired}}<h2>Resolved by repairs ({{len .R.Repaired}})</h2>
<table id="repaired"><thead><tr><th>Class</th><th>Order</th><th>Coupon</th><th>Resolution</th></tr></thead><tbody>
{{range .R.Repaired}}<tr><td>{{.Class}}</td><td>{{.OrderNo}}</td><td>{{.CouponCode}}</td><td>{{.Resolution}}</td></tr>
{{end}}</tbody></table>{{end}}
<h2>Findings by class</h2>
<svg id="chart" role="img" aria-label="findings by class" width="760" height="{{.ChartHeight}}" viewBox="0 0 760 {{.ChartHeight}}" xmlns="http://www.w3.org/2000/svg">
{{range .Bars}}<g transform="translate(0,{{.Y}})"><text x="240" y="18" text-anchor="end">{{.Class}}</text><rect x="250" y="5" width="{{.W}}" height="18" fill="#cf222e"><title>{{.Class}}: {{.Count}} findings, {{.Risk}} at risk</title></rect><text x="{{.TextX}}" y="18">{{.Count}} ({{.Risk}})</text></g>
{{end}}</svg>
<h2>Findings</h2>
<p><input id="q" type="search" placeholder="Search order, coupon, class, detail…" autofocus>
<select id="cls"><option value="">all classes</option>{{range .Classes}}<option>{{.}}</option>{{end}}</select>
<span id="shown" class="note"></span></p>
{{if .R.TopTruncated}}<p class="note">This table holds the {{len .R.Top}} findings with the most money at risk of {{.R.Findings}}; discrepancies.jsonl has every one.</p>{{end}}
<table id="findings">
<thead><tr><th>Class</th><th>Order</th><th>Coupon</th><th class="n">At risk</th><th>Detail</th></tr></thead>
<tbody>
{{range .R.Top}}<tr data-class="{{.Class}}"{{if .Resolution}} class="resolved"{{end}}><td>{{.Class}}</td><td>{{.OrderNo}}</td><td>{{.CouponCode}}</td><td class="n">{{money .AmountAtRisk}}</td><td>{{if .Resolution}}<b>resolved: {{.Resolution}}</b>. {{end}}{{.Detail}}</td></tr>
{{end}}</tbody>
</table>
<script>
(function(){
  var q=document.getElementById('q'),cls=document.getElementById('cls'),shown=document.getElementById('shown');
  var rows=Array.prototype.slice.call(document.querySelectorAll('#findings tbody tr'));
  var text=rows.map(function(r){return r.textContent.toLowerCase();});
  function filter(){
    var s=q.value.toLowerCase().trim(),c=cls.value,n=0;
    rows.forEach(function(r,i){
      var ok=(!c||r.getAttribute('data-class')===c)&&(!s||text[i].indexOf(s)>=0);
      r.style.display=ok?'':'none'; if(ok)n++;
    });
    shown.textContent=n+' of '+rows.length+' shown';
  }
  q.addEventListener('input',filter);cls.addEventListener('change',filter);filter();
})();
</script>
</body>
</html>
`))

package console

import (
	"fmt"
	"net/http"
	"os"
	"sort"
	"time"
)

type reconcileData struct {
	Configured bool
	Runs       []reconcileRow
}

type reconcileRow struct {
	ReconcileRun
	Day     string
	Classes []classTotal
	Total   int64
}

type classTotal struct {
	Class string
	Count int64
}

func (c *Console) reconcile(w http.ResponseWriter, r *http.Request, ss *session) {
	v := view{Title: "Reconcile runs", Nav: "reconcile"}
	d := reconcileData{Configured: c.d.Reconcile != nil}
	if d.Configured {
		runs, err := c.d.Reconcile.Runs(r.Context(), 60)
		if err != nil {
			c.d.Log.WarnContext(r.Context(), "console: list reconcile runs", "err", err)
			v.Problem = &problem{Words: "The reconcile runs could not be read.", Reason: "UNAVAILABLE", Message: err.Error(), HTTP: http.StatusServiceUnavailable}
		}
		for _, run := range runs {
			row := reconcileRow{ReconcileRun: run, Day: run.Date.Format(time.DateOnly)}
			for class, n := range run.Totals {
				row.Classes = append(row.Classes, classTotal{class, n})
				row.Total += n
			}
			sort.Slice(row.Classes, func(i, j int) bool { return row.Classes[i].Class < row.Classes[j].Class })
			d.Runs = append(d.Runs, row)
		}
	}
	v.Data = d
	c.render(w, r, ss, "reconcile", v)
}

// reconcileReport serves the report.html of the run of one day: the path
// comes from the run list, never from the request.
func (c *Console) reconcileReport(w http.ResponseWriter, r *http.Request, ss *session) {
	if c.d.Reconcile == nil {
		http.NotFound(w, r)
		return
	}
	runs, err := c.d.Reconcile.Runs(r.Context(), 366)
	if err != nil {
		http.Error(w, "the reconcile runs could not be read", http.StatusServiceUnavailable)
		return
	}
	for _, run := range runs {
		if run.Date.Format(time.DateOnly) != r.PathValue("date") || run.ReportPath == "" {
			continue
		}
		f, err := os.Open(run.ReportPath)
		if err != nil {
			http.Error(w, fmt.Sprintf("the report of %s cannot be read", r.PathValue("date")), http.StatusNotFound)
			return
		}
		defer f.Close()
		// The report is a self-contained page of its own; it may carry
		// inline script and style, which the console's policy forbids.
		w.Header().Set("Content-Security-Policy", "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:; sandbox allow-scripts")
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		st, _ := f.Stat()
		http.ServeContent(w, r, "report.html", st.ModTime(), f)
		return
	}
	http.NotFound(w, r)
}

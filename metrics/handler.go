package metrics

import (
	"bytes"
	"compress/gzip"
	"net/http"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
)

// renderedRollups is the text exposition of the delivery metrics for one
// rollups version, plain and gzipped.
type renderedRollups struct {
	mu      sync.Mutex
	version int64
	valid   bool
	plain   []byte
	gzipped []byte
}

// Handler serves /metrics in Prometheus's text format. The delivery
// metrics — a histogram and counters per repository and environment, the
// bulk of the exposition — are rendered once each time the rollups change
// (a deployment finished, a review was decided), not at every scrape; the
// rest (process, webhook and GitHub counters, inbox) is rendered per scrape.
// With Accept-Encoding: gzip the two parts are sent as two gzip members,
// which gzip readers (Prometheus's among them) read as one stream.
func (m *Metrics) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		live, plain, gzipped, err := m.render()
		if err != nil {
			http.Error(w, "encode metrics: "+err.Error(), http.StatusInternalServerError)
			return
		}

		h := w.Header()
		h.Set("Content-Type", string(expfmt.NewFormat(expfmt.TypeTextPlain)))
		if !acceptsGzip(r) {
			w.Write(live)
			w.Write(plain)
			return
		}
		h.Set("Content-Encoding", "gzip")
		zw := gzip.NewWriter(w)
		zw.Write(live)
		zw.Close()
		w.Write(gzipped)
	})
}

// render gathers one scrape: the live part, and the delivery part of the
// same database snapshot (which gathering the live part renders). Scrapes
// are rendered one at a time (not written: a slow client holds no other
// scrape back).
func (m *Metrics) render() (live, plain, gzipped []byte, err error) {
	m.scrape.Lock()
	defer m.scrape.Unlock()
	mfs, gerr := m.live.Gather()
	if gerr != nil {
		m.log.Warn("metrics: gather", "error", gerr)
	}
	var buf bytes.Buffer
	enc := expfmt.NewEncoder(&buf, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, mf := range mfs {
		if err := enc.Encode(mf); err != nil {
			return nil, nil, nil, err
		}
	}
	return buf.Bytes(), m.delivery[0], m.delivery[1], nil
}

// rollupsText returns the delivery metrics' exposition of snap, rendering
// it again only when the snapshot's rollups version moved. If it cannot
// be rendered (two series with one label set, which the registry refuses),
// there is none: that is counted in lastmile_metrics_source_errors_total
// and logged, at each scrape until the rollups change.
func (m *Metrics) rollupsText(snap *Snapshot) (plain, gzipped []byte) {
	c := &m.rendered
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.valid && c.version == snap.RollupsVersion {
		return c.plain, c.gzipped
	}
	failed := func(err error) ([]byte, []byte) {
		m.scrapeErrors.Inc()
		m.log.Error("metrics: delivery metrics left out of the scrape", "rollups_version", snap.RollupsVersion, "error", err)
		return nil, nil
	}
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(rollupCollector{snap}); err != nil {
		return failed(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		return failed(err)
	}
	var buf, zbuf bytes.Buffer
	enc := expfmt.NewEncoder(&buf, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, mf := range mfs {
		if err := enc.Encode(mf); err != nil {
			return failed(err)
		}
	}
	zw, _ := gzip.NewWriterLevel(&zbuf, gzip.BestSpeed)
	zw.Write(buf.Bytes())
	zw.Close()
	c.version, c.valid, c.plain, c.gzipped = snap.RollupsVersion, true, buf.Bytes(), zbuf.Bytes()
	return c.plain, c.gzipped
}

func acceptsGzip(r *http.Request) bool {
	for _, part := range strings.Split(r.Header.Get("Accept-Encoding"), ",") {
		enc, q, _ := strings.Cut(strings.TrimSpace(part), ";")
		if strings.TrimSpace(enc) == "gzip" && strings.TrimSpace(q) != "q=0" {
			return true
		}
	}
	return false
}

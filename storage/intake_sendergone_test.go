package storage

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"
	"time"

	"github.com/lastmile-app/lastmile/pipeline"
)

// A sender that goes away while its delivery waits for the commit still
// gets the commit's result: the delivery is stored and counted once, and
// the caller reports what happened, not a refusal.
func TestAcceptOfASenderThatWentAway(t *testing.T) {
	db, err := Open(context.Background(), filepath.Join(t.TempDir(), "lastmile.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	// Another write holds the one write connection: the batch waits.
	holding, release := make(chan struct{}), make(chan struct{})
	held := make(chan error, 1)
	go func() {
		held <- db.inTx(context.Background(), func(*sql.Tx) error { close(holding); <-release; return nil })
	}()
	<-holding
	ctx, cancel := context.WithCancel(context.Background())
	accepted := make(chan error, 1)
	go func() {
		_, err := db.Accept(ctx, &pipeline.Delivery{ID: "d-gone", Event: "push", Repository: "a/b", Body: []byte(`{}`)}, "push", "accepted")
		accepted <- err
	}()
	// Wait until the batch with the delivery waits for the connection,
	// then let the sender go.
	deadline := time.Now().Add(10 * time.Second)
	for db.write.Stats().WaitCount == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the delivery's batch never waited for the write connection")
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	select {
	case err := <-accepted:
		t.Fatalf("Accept returned before the commit (%v): its caller would report a result it does not know", err)
	default:
	}
	close(release)
	if err := <-held; err != nil {
		t.Fatal(err)
	}
	if err := <-accepted; err != nil {
		t.Fatalf("Accept after the sender went away: %v, want the commit's result (stored)", err)
	}
	if _, err := db.GetDelivery(context.Background(), "d-gone"); err != nil {
		t.Fatalf("the delivery was not committed: %v", err)
	}
	series, err := db.Counters(context.Background(), MetricWebhookDeliveries)
	if err != nil || len(series) != 1 || series[0].Value != 1 || series[0].Labels[1] != "accepted" {
		t.Errorf("counted %+v, %v; want the delivery once, as accepted", series, err)
	}
}

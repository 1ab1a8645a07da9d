package pipeline

import "time"

// DeliveryState is where a webhook delivery stands in lastmile's inbox.
type DeliveryState string

// The states of a delivery. A delivery enters the inbox as pending (or as
// ignored, for events lastmile does not act on) and leaves it as done,
// ignored (a push of a repository that is not enrolled, or a dead delivery
// an operator gave up) or dead.
const (
	DeliveryPending DeliveryState = "pending" // waiting for the worker, possibly after a failed attempt
	DeliveryDone    DeliveryState = "done"    // handled; its effects are committed
	DeliveryIgnored DeliveryState = "ignored" // an event lastmile does not handle, a ping, a push of a repository not enrolled, a discarded delivery
	DeliveryDead    DeliveryState = "dead"    // failed too often; waits for an operator
)

// Delivery is one GitHub webhook delivery as it was received: the audit
// record of what GitHub told lastmile, and the unit of work of the worker.
type Delivery struct {
	Seq            int64  // arrival order, assigned by the inbox
	ID             string // X-GitHub-Delivery; a redelivery keeps it
	Event          string // X-GitHub-Event
	Action         string // the payload's "action", if any
	InstallationID int64
	RepositoryID   int64
	Repository     string // owner/name, or "" for events without a repository
	ReceivedAt     time.Time
	Body           []byte // the raw body, exactly as signed; nil once pruned
	// BodyDamage, when not nil, says why the stored body could not be read
	// back (Body is then nil): the worker parks the delivery as dead.
	BodyDamage error

	State         DeliveryState
	Attempts      int
	Waits         int // times it waited for GitHub (rate limit, API catching up, no answer): not attempts
	NextAttemptAt time.Time
	LastError     string
	FinishedAt    time.Time
	Note          string // what handling concluded, e.g. why it was ignored
}

// InHand names the queue of a delivery for the worker, which hands out one
// delivery of a queue at a time: its repository's ID, which a rename or a
// transfer keeps, or the name of a delivery that has no repository ID; a
// delivery of no repository at all (an installation's own events) is
// queued with its installation's.
type InHand struct {
	RepositoryID int64
	Repository   string // only when RepositoryID is 0
	Installation int64  // only when both are empty
}

// InHandOf is the InHand of a repository ID and name, and of the
// installation a delivery with neither came from.
func InHandOf(repositoryID int64, repository string, installation int64) InHand {
	switch {
	case repositoryID != 0:
		return InHand{RepositoryID: repositoryID}
	case repository != "":
		return InHand{Repository: repository}
	}
	return InHand{Installation: installation}
}

// InHand names d's queue for the worker.
func (d *Delivery) InHand() InHand { return InHandOf(d.RepositoryID, d.Repository, d.InstallationID) }

// Redeliveries is what lastmile asked GitHub about one webhook delivery
// GUID that never reached it: how many redeliveries, and whether it gave up.
type Redeliveries struct {
	Requests int
	GaveUp   bool
}

// HookDelivery is a webhook delivery as GitHub lists them for redelivery:
// its GUID (X-GitHub-Delivery, the same on every attempt), the ID of one of
// its attempts (what a redelivery request names), its event, and its first
// attempt known (GitHub's clock).
type HookDelivery struct {
	GUID         string
	AttemptID    int64 // RefusedForGood: GitHub said it will not redeliver it
	Event        string
	FirstAttempt time.Time
}

// RefusedForGood is the AttemptID of a delivery GitHub refused to
// redeliver (404, 422: gone, or past its window), which a check at start
// does not ask for again.
const RefusedForGood = -1

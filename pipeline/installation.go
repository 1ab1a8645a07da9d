package pipeline

import "time"

// GitHub tells every App, unasked, what becomes of its installations: an
// account uninstalls it (`installation` deleted), suspends or unsuspends it,
// or removes repositories from it (`installation_repositories` removed).
// A repository lastmile can no longer reach leaves lastmile as one whose
// configuration was removed (see leave): its environments are retired and
// its releases on their way stop, saying why and who did it. Unlike leave,
// nothing is left for GitHub: GitHub refuses every call for it now.
// A suspension stops nothing: the installation's deliveries wait until it
// is unsuspended (see app.Worker).

// InstallationAction is what happened to an installation of the App.
type InstallationAction string

// The actions lastmile acts on; others (new_permissions_accepted) are
// recorded only.
const (
	InstallationCreated   InstallationAction = "created"   // installation
	InstallationDeleted   InstallationAction = "deleted"   // installation: the App was uninstalled
	InstallationSuspend   InstallationAction = "suspend"   // installation
	InstallationUnsuspend InstallationAction = "unsuspend" // installation
	RepositoriesAdded     InstallationAction = "added"     // installation_repositories
	RepositoriesRemoved   InstallationAction = "removed"   // installation_repositories
)

// InstallationEvent is an `installation` or `installation_repositories`
// event.
type InstallationEvent struct {
	InstallationID int64
	Account        string // the account the App is installed on
	Action         InstallationAction
	// Repos are the repositories the event names: the installation's
	// (deleted), or those removed or added. GitHub gives only their ID and
	// full name.
	Repos  []Repo
	Sender string // who did it
	// At is when it happened: for a suspension, the time GitHub gives;
	// otherwise when lastmile received the delivery.
	At time.Time
}

// InstallationStatus is where an installation of the App stands.
type InstallationStatus string

const (
	InstallationActive      InstallationStatus = "active"
	InstallationSuspended   InstallationStatus = "suspended"
	InstallationUninstalled InstallationStatus = "deleted"
)

// InstallationState is what lastmile knows of an installation: its state,
// since when and who put it there.
type InstallationState struct {
	ID      int64
	Account string
	State   InstallationStatus
	Since   time.Time
	By      string
}

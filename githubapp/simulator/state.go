package simulator

import (
	"strings"
	"time"
)

// state is everything the Simulator knows. It is guarded by Simulator.mu.
type state struct {
	s          *Simulator
	apiURL     string // REST root without trailing slash
	urlKnown   bool   // apiURL was set by Start or SetURL, or learnt
	requestSeq int64
	webhookURL string
	nextID     int64

	accounts      map[string]*account // by lower-case login
	installations map[int64]*installation
	repos         map[string]*repo // by lower-case full name
	tokens        map[string]*token
	tokenLag      time.Duration // SetTokenLag
	rates         map[string]*rateWindow

	deliveries []*Delivery // oldest first
	queue      []*outgoing
	sending    bool
	holds      []*WebhookHold
	held       []*outgoing // set aside by holds, oldest first

	runs     map[int64]*run
	runOrder []int64
	jobs     map[int64]*job
	blobs    map[string]int64 // log blob key -> job id

	faults   []*Fault
	requests []RequestRecord
}

func newState(s *Simulator) *state {
	return &state{
		s:             s,
		apiURL:        "http://127.0.0.1",
		nextID:        5000000000, // past 2³², as GitHub's job and run ids are: a 32-bit id shows
		accounts:      map[string]*account{},
		installations: map[int64]*installation{},
		repos:         map[string]*repo{},
		tokens:        map[string]*token{},
		rates:         map[string]*rateWindow{},
		runs:          map[int64]*run{},
		jobs:          map[int64]*job{},
		blobs:         map[string]int64{},
	}
}

// id returns a fresh object id. All objects share one sequence, which keeps
// ids unique across kinds and increasing in creation order, as on GitHub.
func (st *state) id() int64 {
	st.nextID++
	return st.nextID
}

// account is a user, organization or bot.
type account struct {
	login string
	id    int64
	typ   string // User, Organization or Bot
	app   int64  // a bot's App
}

type installation struct {
	id        int64
	account   *account
	repos     []*repo // the repositories the App reaches through it
	selection string  // "all", or "selected" once a repository was removed
	createdAt time.Time
	updatedAt time.Time
	// suspendedBy is who suspended it, nil while it is not suspended.
	suspendedBy *account
	suspendedAt time.Time
	deleted     bool // the App was uninstalled
}

// has reports whether the App reaches r through the installation.
func (inst *installation) has(r *repo) bool {
	for _, x := range inst.repos {
		if x == r {
			return true
		}
	}
	return false
}

type repo struct {
	id            int64
	owner         *account
	name          string
	private       bool
	defaultBranch string
	// installation is the one the repository was created under; whether
	// the App still reaches it through it is installation.has.
	installation *installation
	createdAt    time.Time
	pushedAt     time.Time

	branches     map[string]string // name -> sha
	commits      map[string]*commit
	statuses     map[string][]*commitStatus // sha -> oldest first
	checkSuites  map[string]*checkSuite     // sha -> the CI App's suite
	deployments  []*deployment              // oldest first
	environments map[string]*environment    // by lower-case name: GitHub's environment names ignore case
	workflows    []*workflowDef             // on: deployment
	ruleReviews  []ProtectionRuleReview
	properties   obj // custom properties, by name
}

func (r *repo) fullName() string { return r.owner.login + "/" + r.name }

type commit struct {
	sha       string
	treeSHA   string
	parents   []string
	message   string
	author    gitPerson
	committer gitPerson
	files     map[string]string // full tree: path -> content
	seq       int64             // creation order
	pushed    bool              // listed by a push already: listed again, it is not distinct
}

type gitPerson struct {
	name, email, login string
	date               time.Time
}

type commitStatus struct {
	id          int64
	sha         string
	state       string
	context     string
	description *string
	targetURL   *string
	creator     *account
	createdAt   time.Time
}

type deployment struct {
	id                  int64
	sha                 string
	ref                 string
	task                string
	payload             any
	environment         string
	originalEnvironment string
	description         *string // nil (null) when the creator gave none
	creator             *account
	viaApp              *appInfo
	production          bool
	transient           bool
	createdAt           time.Time
	updatedAt           time.Time
	statuses            []*deploymentStatus // oldest first
	run                 *run                // set for deployments Actions created for a job
	job                 *job                // that job
}

type deploymentStatus struct {
	id             int64
	state          string
	description    string
	environment    string
	environmentURL string
	logURL         string
	targetURL      string
	creator        *account
	viaApp         *appInfo
	createdAt      time.Time
}

// appInfo identifies a GitHub App (for performed_via_github_app).
type appInfo struct {
	id          int64
	slug        string
	name        string
	description string
	owner       *account
	permissions map[string]string
	events      []string
}

type environment struct {
	id   int64
	name string
	opts EnvironmentOptions
}

// lookupRepo finds a repository by "owner/name", case-insensitively.
func (st *state) lookupRepo(fullName string) *repo {
	return st.repos[strings.ToLower(fullName)]
}

// accountFor returns the account with login, creating a User if unknown.
func (st *state) accountFor(login string) *account {
	if a, ok := st.accounts[strings.ToLower(login)]; ok {
		return a
	}
	a := &account{login: login, id: st.id(), typ: "User"}
	st.accounts[strings.ToLower(login)] = a
	return a
}

// addAccount registers an account of the given type and id (0 = fresh).
func (st *state) addAccount(login, typ string, id int64) *account {
	if a, ok := st.accounts[strings.ToLower(login)]; ok {
		return a
	}
	if id == 0 {
		id = st.id()
	}
	a := &account{login: login, id: id, typ: typ}
	st.accounts[strings.ToLower(login)] = a
	return a
}

package remoteconfig

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// Status is the retained payload on courier/<agent-id>/config/status (the contract's
// table), plus which target supplied which version.
type Status struct {
	Version      int64            `json:"version"`
	State        string           `json:"state"` // applied | rejected | reverted
	Error        string           `json:"error"`
	ConfigSHA256 string           `json:"config_sha256"`
	Source       string           `json:"source"` // local | remote | last-known-good
	At           time.Time        `json:"at"`
	Target       string           `json:"target,omitempty"`  // the document this status is about
	Applied      map[string]int64 `json:"applied,omitempty"` // target → version running now
}

// States of a document and sources of the running config.
const (
	StateApplied  = "applied"
	StateRejected = "rejected"
	StateReverted = "reverted"

	SourceLocal         = "local"
	SourceRemote        = "remote"
	SourceLastKnownGood = "last-known-good"
)

// Applied is one document the agent runs on.
type Applied struct {
	Target  string `json:"target"`
	Version int64  `json:"version"`
	JWS     string `json:"jws"` // kept signed: it is verified again at the next start
}

// State is what an agent remembers across restarts, in data_dir/remote-config/state.json:
// the documents it runs on (its last-known-good) and, per target, the highest version it
// ever accepted or refused after applying, so neither a replay nor a reverted document
// comes back.
type State struct {
	Applied []Applied        `json:"applied"`
	Floor   map[string]int64 `json:"floor"`
}

// Version is the version running for target, 0 for none.
func (s *State) Version(target string) int64 {
	for _, a := range s.Applied {
		if a.Target == target {
			return a.Version
		}
	}
	return 0
}

// With returns a copy of s in which target runs doc (replacing its previous one).
func (s *State) With(a Applied) *State {
	n := &State{Floor: map[string]int64{}}
	for k, v := range s.Floor {
		n.Floor[k] = v
	}
	for _, old := range s.Applied {
		if old.Target != a.Target {
			n.Applied = append(n.Applied, old)
		}
	}
	n.Applied = append(n.Applied, a)
	slices.SortFunc(n.Applied, func(x, y Applied) int {
		switch {
		case x.Target < y.Target:
			return -1
		case x.Target > y.Target:
			return 1
		}
		return 0
	})
	n.RaiseFloor(a.Target, a.Version)
	return n
}

// RaiseFloor records that versions up to v of target must not be applied again.
func (s *State) RaiseFloor(target string, v int64) {
	if s.Floor == nil {
		s.Floor = map[string]int64{}
	}
	if v > s.Floor[target] {
		s.Floor[target] = v
	}
}

// Versions maps target → version of what runs.
func (s *State) Versions() map[string]int64 {
	m := map[string]int64{}
	for _, a := range s.Applied {
		m[a.Target] = a.Version
	}
	return m
}

// Store keeps State in dir (data_dir/remote-config), written atomically.
type Store struct{ dir string }

func NewStore(dataDir string) *Store { return &Store{dir: filepath.Join(dataDir, "remote-config")} }

func (s *Store) path() string { return filepath.Join(s.dir, "state.json") }

// Load returns the saved state, or an empty one when there is none yet.
func (s *Store) Load() (*State, error) {
	b, err := os.ReadFile(s.path())
	if errors.Is(err, fs.ErrNotExist) {
		return &State{Floor: map[string]int64{}}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("remote config state: %w", err)
	}
	var st State
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("remote config state %s: %w (move it aside to start from the local config)", s.path(), err)
	}
	if st.Floor == nil {
		st.Floor = map[string]int64{}
	}
	return &st, nil
}

// Save writes st durably: temp file, fsync, rename, fsync of the directory.
func (s *Store) Save(st *State) error {
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return fmt.Errorf("remote config state: %w", err)
	}
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	tmp := s.path() + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("remote config state: %w", err)
	}
	if _, err := f.Write(b); err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("remote config state: write: %w", err)
	}
	if err := os.Rename(tmp, s.path()); err != nil {
		return fmt.Errorf("remote config state: %w", err)
	}
	if d, err := os.Open(s.dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

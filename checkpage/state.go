package checkpage

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/sshmesh/sshmesh/internal/atomicfile"
	"github.com/sshmesh/sshmesh/meshkey"
)

// stateFile is the JSON of Checker.StateFile.
type stateFile struct {
	Version   int          `json:"version"`
	Approvals []savedEntry `json:"approvals"`
}

// stateVersion is the state file's format. Version 1 keyed approvals by
// the rule's place in the policy ("ssh[2]"); its approvals are dropped on
// load, since a reorder may have moved them to another rule.
const stateVersion = 2

type savedEntry struct {
	Peer      meshkey.Public `json:"peer"`
	Caller    string         `json:"caller"` // callerKey: "owner|tag,tag"
	LocalUser string         `json:"local_user"`
	Rule      string         `json:"rule"` // ruleKey: "id:" and the rule's RuleID
	Approved  time.Time      `json:"approved"`
	Expires   time.Time      `json:"expires"`
}

// load reads the state file into c.approvals, dropping expired approvals.
// Called once, before any other use.
func (c *Checker) load() {
	if c.StateFile == "" {
		return
	}
	b, err := os.ReadFile(c.StateFile)
	if errors.Is(err, fs.ErrNotExist) {
		return
	}
	if err == nil {
		err = c.decode(b)
	}
	if err != nil {
		c.logger().Warn("check approvals not loaded; starting with none", "file", c.StateFile, "err", err)
	}
}

func (c *Checker) decode(b []byte) error {
	var st stateFile
	if err := json.Unmarshal(b, &st); err != nil {
		return err
	}
	if st.Version == 1 {
		c.logger().Warn("check approvals of state version 1 dropped: they name rules by position, which a policy change may have moved", "file", c.StateFile)
		return nil
	}
	if st.Version != stateVersion {
		return fmt.Errorf("version %d: want %d", st.Version, stateVersion)
	}
	now := c.now()
	for _, e := range st.Approvals {
		if !now.Before(e.Expires) {
			continue
		}
		c.approvals[approvalKey{Peer: e.Peer, Caller: e.Caller, LocalUser: e.LocalUser, Rule: e.Rule}] = approval{Approved: e.Approved, Expires: e.Expires}
	}
	return nil
}

// save writes the unexpired approvals to the state file, dropping expired
// ones from memory too. Errors are logged: the approvals still hold in
// memory.
func (c *Checker) save() {
	if c.StateFile == "" {
		return
	}
	c.saveMu.Lock()
	defer c.saveMu.Unlock()
	now := c.now()
	st := stateFile{Version: stateVersion, Approvals: []savedEntry{}}
	c.mu.Lock()
	for k, a := range c.approvals {
		if !now.Before(a.Expires) {
			delete(c.approvals, k)
			continue
		}
		st.Approvals = append(st.Approvals, savedEntry{Peer: k.Peer, Caller: k.Caller, LocalUser: k.LocalUser, Rule: k.Rule, Approved: a.Approved, Expires: a.Expires})
	}
	c.mu.Unlock()
	sort.Slice(st.Approvals, func(i, j int) bool { return st.Approvals[i].Expires.Before(st.Approvals[j].Expires) })
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		c.logger().Error("check approvals not saved", "file", c.StateFile, "err", err)
		return
	}
	if err := os.MkdirAll(filepath.Dir(c.StateFile), 0o700); err != nil {
		c.logger().Error("check approvals not saved; they hold until restart", "file", c.StateFile, "err", err)
		return
	}
	if err := atomicfile.WriteFile(c.StateFile, append(b, '\n'), 0o600); err != nil {
		c.logger().Error("check approvals not saved; they hold until restart", "file", c.StateFile, "err", err)
	}
}

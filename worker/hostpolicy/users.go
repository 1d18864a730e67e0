package hostpolicy

import (
	"errors"
	"fmt"
	"os"
	"os/user"
	"slices"
	"strconv"
	"syscall"

	"github.com/orderly-run/orderly/internal/order"
)

// runUser is who an order runs as, and how the worker becomes that user.
type runUser struct {
	name       string
	homeDir    string
	credential *syscall.Credential // set when a root worker switches user
	sudo       bool                // set when an unprivileged worker uses sudo
}

// home is the user's home directory if it exists, else "/", for both HOME
// and the working directory (nobody's home is /nonexistent).
func (u runUser) home() string {
	if u.homeDir != "" {
		if fi, err := os.Stat(u.homeDir); err == nil && fi.IsDir() {
			return u.homeDir
		}
	}
	return "/"
}

// runAs decides who runs an order that asked for requested ("" for the
// default).
//
// The allowed users are worker.allowed_users plus the default user, which
// is worker.default_user or, when that is empty, the worker's own user. The
// worker's own user is not implicitly allowed otherwise: a root worker whose
// default_user is nobody must not run "run_as": "root" just because root is
// who it is. A name that is not allowed is refused before it is looked up,
// so refusals do not reveal which users exist.
func (p *Policy) runAs(requested string) (runUser, error) {
	if requested != "" && !order.ValidUser(requested) {
		return runUser{}, order.FieldError(order.CodeInvalid, "run_as", "run_as is not a valid user name")
	}
	target := requested
	if target == "" {
		target = p.defaultUser
	}
	if target == "" {
		return runUser{name: p.self.Username, homeDir: p.self.HomeDir}, nil
	}
	listed := p.userAllowed(target)
	u, err := lookupUser(target)
	if err != nil && !unknownUser(err) {
		// The host could not answer (the worker out of file
		// descriptors to read /etc/passwd, its NSS service down):
		// nothing refused the order, and the user may well exist.
		// Unavailable, which the worker records as a failed run.
		return runUser{}, &order.Error{Code: order.CodeUnavailable, Message: fmt.Sprintf("could not look up user %q on this host", target), Err: err}
	}
	if err != nil {
		if !listed {
			return runUser{}, notAllowed(target)
		}
		return runUser{}, order.FieldError(order.CodeUnprocessable, "run_as", "user %q does not exist on this host", target)
	}
	if !listed && !p.userAllowed(u.Username) && !p.userAllowed(u.Uid) {
		return runUser{}, notAllowed(target)
	}
	ru := runUser{name: u.Username, homeDir: u.HomeDir}
	if u.Uid == p.self.Uid {
		return ru, nil // already that user: no switch
	}
	switch {
	case p.euid == 0:
		cred, err := credential(u)
		if err != nil {
			return runUser{}, err
		}
		ru.credential = cred
	case p.useSudo:
		ru.sudo = true
	default:
		return runUser{}, order.FieldError(order.CodeUnprocessable, "run_as",
			"the worker runs as %s and cannot switch to %s: run it as root or set worker.use_sudo", p.self.Username, u.Username)
	}
	return ru, nil
}

// selfUser is the user with uid euid, the worker's own. A uid with no
// passwd entry (containers) is still an identity.
func selfUser(euid int) *user.User {
	u, err := user.LookupId(strconv.Itoa(euid))
	if err != nil {
		return &user.User{Uid: strconv.Itoa(euid), Gid: strconv.Itoa(os.Getegid()), Username: strconv.Itoa(euid)}
	}
	return u
}

// checkDefaultUser refuses a default user that is another user when the
// worker can switch to none (not root, no sudo): it would refuse every
// order that names no user, as orderly-serve.service (the user orderly)
// did with a default_user of nobody. A user that does not exist yet is
// left to each order's check.
func (p *Policy) checkDefaultUser() error {
	if p.defaultUser == "" || p.euid == 0 || p.useSudo {
		return nil
	}
	u, err := lookupUser(p.defaultUser)
	if err != nil || u.Uid == p.self.Uid {
		return nil
	}
	return fmt.Errorf("worker.default_user %q: the worker runs as %s and cannot switch users, so it would refuse every order that names no user: "+
		"leave default_user empty (orders run as %s), run the worker as root, or set worker.use_sudo", p.defaultUser, p.self.Username, p.self.Username)
}

// userAllowed reports whether a user name or uid is allowed: listed in
// allowed_users, or the default user.
func (p *Policy) userAllowed(name string) bool {
	if slices.Contains(p.allowedUsers, name) {
		return true
	}
	if p.defaultUser != "" {
		return name == p.defaultUser
	}
	return name == p.self.Username || name == p.self.Uid
}

func notAllowed(name string) error {
	return order.FieldError(order.CodeForbidden, "run_as", "running as user %q is not allowed on this host", name)
}

// lookupUser finds a user by name, or by uid for a numeric name with no
// user of that name.
func lookupUser(name string) (*user.User, error) {
	u, err := user.Lookup(name)
	if err != nil {
		if _, numErr := strconv.ParseUint(name, 10, 32); numErr == nil {
			return user.LookupId(name)
		}
	}
	return u, err
}

// unknownUser reports whether err, of lookupUser, says there is no such
// user, rather than that the lookup itself failed.
func unknownUser(err error) bool {
	var name user.UnknownUserError
	var id user.UnknownUserIdError
	return errors.As(err, &name) || errors.As(err, &id)
}

// credential is u's uid, primary gid and supplementary groups, so that the
// process carries exactly u's groups and none of root's.
func credential(u *user.User) (*syscall.Credential, error) {
	bad := func() error {
		return order.FieldError(order.CodeUnprocessable, "run_as", "user %q has an unusable uid, gid or group list", u.Username)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, bad()
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, bad()
	}
	ids, err := u.GroupIds()
	if err != nil {
		// Reading the group database failed (as a lookup can: out of
		// descriptors): the host's trouble, not the user's.
		return nil, &order.Error{Code: order.CodeUnavailable, Message: fmt.Sprintf("could not list the groups of user %q on this host", u.Username), Err: err}
	}
	groups := make([]uint32, 0, len(ids))
	for _, id := range ids {
		g, err := strconv.ParseUint(id, 10, 32)
		if err != nil {
			return nil, bad()
		}
		groups = append(groups, uint32(g))
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: groups}, nil
}

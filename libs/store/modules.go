package store

import (
	"context"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	fnhook "github.com/fnhook/fnhook/libs"
)

// GetModule returns the build record of name@version; found is false when there is none.
func (s *Store) GetModule(ctx context.Context, name, version string) (fnhook.Module, bool, error) {
	return get[fnhook.Module](ctx, s, moduleKey(name, version), metaSK)
}

// ClaimModule marks name@version as being built by owner until now+ttl. It succeeds when
// no record exists, or the record is building under an expired claim (a builder died), or
// it is already owner's. claimed is false, with the current record, when another builder
// holds a live claim or the module is ready or failed.
func (s *Store) ClaimModule(ctx context.Context, name, version, owner string, ttl time.Duration) (m fnhook.Module, claimed bool, err error) {
	now := time.Now()
	cur, found, err := s.GetModule(ctx, name, version)
	if err != nil {
		return cur, false, err
	}
	attempts := 1
	if found {
		attempts = cur.Attempts + 1
	}
	m = fnhook.Module{
		Name: name, Version: version, Status: fnhook.ModuleBuilding, Owner: owner,
		ClaimUntil: now.Add(ttl).UnixMilli(), Attempts: attempts, UpdatedAt: now,
	}
	err = put(ctx, s, moduleKey(name, version), metaSK, m,
		"attribute_not_exists(PK) OR (#i.#s = :b AND (#i.claimUntil < :now OR #i.#o = :me))",
		map[string]types.AttributeValue{":b": str(fnhook.ModuleBuilding), ":now": num64(now.UnixMilli()), ":me": str(owner)})
	if isConditionFailed(err) {
		cur, _, gerr := s.GetModule(ctx, name, version)
		return cur, false, gerr
	}
	if err != nil {
		return m, false, fmt.Errorf("claim module %s: %w", fnhook.ModuleKey(name, version), err)
	}
	return m, true, nil
}

// FinishModule records the outcome of owner's build (ready or failed). It fails with a
// conflict when the module is already ready (another builder finished first).
func (s *Store) FinishModule(ctx context.Context, m fnhook.Module) error {
	m.Owner, m.ClaimUntil = "", 0
	m.UpdatedAt = time.Now()
	err := put(ctx, s, moduleKey(m.Name, m.Version), metaSK, m, "attribute_not_exists(PK) OR #i.#s <> :r",
		map[string]types.AttributeValue{":r": str(fnhook.ModuleReady)})
	if isConditionFailed(err) {
		return fnhook.Errorf(fnhook.CodeConflict, "module %s is already ready", fnhook.ModuleKey(m.Name, m.Version))
	}
	if err != nil {
		return fmt.Errorf("finish module %s: %w", fnhook.ModuleKey(m.Name, m.Version), err)
	}
	return nil
}

// ReleaseModule drops owner's claim so another builder may take the module at once (after
// a transient failure). It does nothing if the claim is no longer owner's.
func (s *Store) ReleaseModule(ctx context.Context, name, version, owner string) error {
	err := s.updateOwnedClaim(ctx, name, version, owner, "SET #i.claimUntil = :z",
		map[string]types.AttributeValue{":z": num64(0)})
	if isConditionFailed(err) {
		return nil
	}
	return err
}

func num64(n int64) *types.AttributeValueMemberN {
	return &types.AttributeValueMemberN{Value: fmt.Sprint(n)}
}

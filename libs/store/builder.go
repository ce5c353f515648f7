package store

import (
	"context"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	fnhook "github.com/fnhook/fnhook/libs"
)

// The module builder's claim is a lease: the builder renews it while it works, records the
// outcome only while it still holds it, and gives it up (resetting the attempt count) when
// it dead-letters a build. These methods complement ClaimModule and ReleaseModule.

// ownedClaim is the condition "owner still holds a build claim on the module".
const ownedClaim = "#i.#o = :me AND #i.#s = :b"

// RenewModuleClaim extends owner's claim on name@version to now+ttl. It fails with a
// conflict when the claim is no longer owner's (it expired and another builder took the
// module over, or the module was finished).
func (s *Store) RenewModuleClaim(ctx context.Context, name, version, owner string, ttl time.Duration) error {
	err := s.updateOwnedClaim(ctx, name, version, owner, "SET #i.claimUntil = :u",
		map[string]types.AttributeValue{":u": num64(time.Now().Add(ttl).UnixMilli())})
	if isConditionFailed(err) {
		return fnhook.Errorf(fnhook.CodeConflict, "claim on module %s is no longer %s's", fnhook.ModuleKey(name, version), owner)
	}
	if err != nil {
		return fmt.Errorf("renew claim on module %s: %w", fnhook.ModuleKey(name, version), err)
	}
	return nil
}

// FinishModuleClaim records the outcome of owner's build (m.Status ready or failed), but
// only while owner still holds the claim: a builder whose claim was taken over must not
// overwrite the new owner's work. A lost claim is a conflict.
func (s *Store) FinishModuleClaim(ctx context.Context, m fnhook.Module, owner string) error {
	m.Owner, m.ClaimUntil = "", 0
	m.UpdatedAt = time.Now()
	err := put(ctx, s, moduleKey(m.Name, m.Version), metaSK, m, ownedClaim,
		map[string]types.AttributeValue{":me": str(owner), ":b": str(fnhook.ModuleBuilding)})
	if isConditionFailed(err) {
		return fnhook.Errorf(fnhook.CodeConflict, "claim on module %s is no longer %s's", fnhook.ModuleKey(m.Name, m.Version), owner)
	}
	if err != nil {
		return fmt.Errorf("finish module %s: %w", fnhook.ModuleKey(m.Name, m.Version), err)
	}
	return nil
}

// AbandonModule drops owner's claim and resets the attempt count, so that a later build
// request (a re-driven dead letter, a new function version) starts afresh. It does nothing
// when the claim is no longer owner's.
func (s *Store) AbandonModule(ctx context.Context, name, version, owner string) error {
	err := s.updateOwnedClaim(ctx, name, version, owner, "SET #i.claimUntil = :z, #i.attempts = :z",
		map[string]types.AttributeValue{":z": num64(0)})
	if isConditionFailed(err) {
		return nil
	}
	return err
}

// updateOwnedClaim applies update to the record of name@version while owner still holds a
// building claim on it (ownedClaim); a lost claim is DynamoDB's condition failure, which
// each caller maps as its contract says. vals holds the update's own placeholders.
func (s *Store) updateOwnedClaim(ctx context.Context, name, version, owner, update string, vals map[string]types.AttributeValue) error {
	vals[":me"] = str(owner)
	vals[":b"] = str(fnhook.ModuleBuilding)
	_, err := s.db.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName:                 &s.table,
		Key:                       key(moduleKey(name, version), metaSK),
		UpdateExpression:          aws.String(update),
		ConditionExpression:       aws.String(ownedClaim),
		ExpressionAttributeNames:  map[string]string{"#i": "item", "#o": "owner", "#s": "status"},
		ExpressionAttributeValues: vals,
	})
	return err
}

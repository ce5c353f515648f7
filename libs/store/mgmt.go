package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	fnhook "github.com/fnhook/fnhook/libs"
)

// floorSK keys a tenant's version floor: the highest version of any function of the tenant
// that was deleted. A function created later starts above it, so (tenant, name, version)
// never names two different bodies even across a delete and a re-create, without keeping a
// tombstone per deleted function. It goes with the tenant (DeleteTenant removes it).
const floorSK = "FNFLOOR"

type versionFloor struct {
	Floor int `dynamodbav:"floor"`
}

// createAttempts bounds retries when the floor moves under a create (a concurrent delete).
const createAttempts = 5

// CreateFunction stores f as a new function and returns the version it got: one above the
// tenant's version floor (so 1 while the tenant never deleted a function). It fails with
// conflict when the function exists.
func (s *Store) CreateFunction(ctx context.Context, f fnhook.Function) (int, error) {
	for range createAttempts {
		floor, found, err := get[versionFloor](ctx, s, tenantPK(f.Tenant), floorSK)
		if err != nil {
			return 0, err
		}
		f.Version = floor.Floor + 1
		fn, err := attributevalue.MarshalMap(keyed[fnhook.Function]{PK: tenantPK(f.Tenant), SK: fnPrefix + f.Name, Item: f})
		if err != nil {
			return 0, fmt.Errorf("marshal function %s/%s: %w", f.Tenant, f.Name, err)
		}
		check := &types.ConditionCheck{TableName: &s.table, Key: key(tenantPK(f.Tenant), floorSK),
			ConditionExpression: aws.String("attribute_not_exists(PK)")}
		if found {
			check.ConditionExpression = aws.String("#i.floor = :f")
			check.ExpressionAttributeNames = map[string]string{"#i": "item"}
			check.ExpressionAttributeValues = map[string]types.AttributeValue{":f": num(floor.Floor)}
		}
		_, err = s.db.TransactWriteItems(ctx, &dynamodb.TransactWriteItemsInput{TransactItems: []types.TransactWriteItem{
			{Put: &types.Put{TableName: &s.table, Item: fn, ConditionExpression: aws.String("attribute_not_exists(PK)")}},
			{ConditionCheck: check},
		}})
		switch failed := cancelled(err); {
		case err == nil:
			return f.Version, nil
		case failed == nil:
			return 0, fmt.Errorf("create function %s/%s: %w", f.Tenant, f.Name, err)
		case failed[0]:
			return 0, fnhook.Errorf(fnhook.CodeConflict, "function %q was created concurrently; read it and retry", f.Name)
		}
		// The floor moved (a function of the tenant was deleted meanwhile): read it again.
	}
	return 0, fnhook.Errorf(fnhook.CodeConflict, "function %q: the tenant's functions changed concurrently; retry", f.Name)
}

// DeleteFunctionAt removes the function if its version is still version, and raises the
// tenant's version floor to it in the same transaction. not_found when it does not exist,
// conflict when it changed.
func (s *Store) DeleteFunctionAt(ctx context.Context, tenant, name string, version int) error {
	floor, err := attributevalue.MarshalMap(keyed[versionFloor]{PK: tenantPK(tenant), SK: floorSK, Item: versionFloor{Floor: version}})
	if err != nil {
		return fmt.Errorf("marshal version floor: %w", err)
	}
	in := &dynamodb.TransactWriteItemsInput{TransactItems: []types.TransactWriteItem{
		{Delete: &types.Delete{TableName: &s.table, Key: key(tenantPK(tenant), fnPrefix+name),
			ConditionExpression:       aws.String("attribute_exists(PK) AND #i.version = :v"),
			ExpressionAttributeNames:  map[string]string{"#i": "item"},
			ExpressionAttributeValues: map[string]types.AttributeValue{":v": num(version)}}},
		{Put: &types.Put{TableName: &s.table, Item: floor,
			ConditionExpression:       aws.String("attribute_not_exists(PK) OR #i.floor < :v"),
			ExpressionAttributeNames:  map[string]string{"#i": "item"},
			ExpressionAttributeValues: map[string]types.AttributeValue{":v": num(version)}}},
	}}
	for range createAttempts {
		_, err = s.db.TransactWriteItems(ctx, in)
		switch failed := cancelled(err); {
		case err == nil:
			return nil
		case failed == nil:
			return fmt.Errorf("delete function %s/%s: %w", tenant, name, err)
		case failed[0]:
			if _, gerr := s.GetFunction(ctx, tenant, name); gerr != nil {
				return gerr
			}
			return fnhook.Errorf(fnhook.CodeConflict, "function %q was changed concurrently", name)
		case failed[1]:
			// The floor is already at or above version (cannot happen for functions made
			// by CreateFunction): delete without touching it.
			return s.DeleteFunction(ctx, tenant, name, version)
		}
		// Cancelled for another reason (a concurrent transaction on the same items): retry.
	}
	return fnhook.Errorf(fnhook.CodeConflict, "function %q was changed concurrently", name)
}

// ReplaceFunctionIf writes f (same version, new build state) only if the stored function
// still has version prev and was last written at prevUpdatedAt, so two build outcomes
// landing at once on one function version cannot overwrite each other. A lost race is a
// conflict: read again and retry.
func (s *Store) ReplaceFunctionIf(ctx context.Context, f fnhook.Function, prev int, prevUpdatedAt time.Time) error {
	item, err := attributevalue.MarshalMap(keyed[fnhook.Function]{PK: tenantPK(f.Tenant), SK: fnPrefix + f.Name, Item: f})
	if err != nil {
		return fmt.Errorf("marshal function %s/%s: %w", f.Tenant, f.Name, err)
	}
	at, err := attributevalue.Marshal(prevUpdatedAt)
	if err != nil {
		return fmt.Errorf("marshal updatedAt: %w", err)
	}
	_, err = s.db.PutItem(ctx, &dynamodb.PutItemInput{
		TableName: &s.table, Item: item,
		ConditionExpression:       aws.String("#i.version = :v AND #i.updatedAt = :u"),
		ExpressionAttributeNames:  map[string]string{"#i": "item"},
		ExpressionAttributeValues: map[string]types.AttributeValue{":v": num(prev), ":u": at},
	})
	if isConditionFailed(err) {
		return fnhook.Errorf(fnhook.CodeConflict, "function %q was changed concurrently", f.Name)
	}
	if err != nil {
		return fmt.Errorf("update function %s/%s: %w", f.Tenant, f.Name, err)
	}
	return nil
}

// cancelled reports, for a cancelled transaction, which of its items failed their
// condition; nil when err is not a cancelled transaction.
func cancelled(err error) []bool {
	var tc *types.TransactionCanceledException
	if !errors.As(err, &tc) {
		return nil
	}
	failed := make([]bool, max(len(tc.CancellationReasons), 2))
	for i, r := range tc.CancellationReasons {
		failed[i] = r.Code != nil && *r.Code == "ConditionalCheckFailed"
	}
	return failed
}

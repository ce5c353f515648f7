package store

import (
	"context"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	fnhook "github.com/fnhook/fnhook/libs"
)

const fnPrefix = "FN#"

// PutFunction writes f if the stored version is still prev (0: the function must not exist
// yet). A lost race is a conflict error; callers retry or answer 409/412.
func (s *Store) PutFunction(ctx context.Context, f fnhook.Function, prev int) error {
	var err error
	if prev == 0 {
		err = put(ctx, s, tenantPK(f.Tenant), fnPrefix+f.Name, f, "attribute_not_exists(PK)", nil)
	} else {
		err = put(ctx, s, tenantPK(f.Tenant), fnPrefix+f.Name, f, "#i.version = :v",
			map[string]types.AttributeValue{":v": num(prev)})
	}
	if isConditionFailed(err) {
		return fnhook.Errorf(fnhook.CodeConflict, "function %q was changed concurrently; read it again and retry", f.Name)
	}
	if err != nil {
		return fmt.Errorf("put function %s/%s: %w", f.Tenant, f.Name, err)
	}
	return nil
}

// GetFunction returns the function, or not_found.
func (s *Store) GetFunction(ctx context.Context, tenant, name string) (fnhook.Function, error) {
	f, ok, err := get[fnhook.Function](ctx, s, tenantPK(tenant), fnPrefix+name)
	if err != nil {
		return f, err
	}
	if !ok {
		return f, fnhook.Errorf(fnhook.CodeNotFound, "function %q of tenant %q does not exist", name, tenant)
	}
	return f, nil
}

// ListFunctions returns up to limit functions (0: all) after the function named after,
// in name order, and the name to continue from ("" when done).
func (s *Store) ListFunctions(ctx context.Context, tenant string, limit int, after string) ([]fnhook.Function, string, error) {
	var afterSK string
	if after != "" {
		afterSK = fnPrefix + after
	}
	fns, next, err := query[fnhook.Function](ctx, s, tenantPK(tenant), fnPrefix, afterSK, limit)
	if err != nil {
		return nil, "", err
	}
	if next != "" {
		next = next[len(fnPrefix):]
	}
	return fns, next, nil
}

// CountFunctions returns how many functions the tenant has.
func (s *Store) CountFunctions(ctx context.Context, tenant string) (int, error) {
	in := &dynamodb.QueryInput{
		TableName:              &s.table,
		KeyConditionExpression: aws.String("PK = :pk AND begins_with(SK, :p)"),
		ExpressionAttributeValues: map[string]types.AttributeValue{
			":pk": str(tenantPK(tenant)), ":p": str(fnPrefix),
		},
		Select: types.SelectCount,
	}
	n := 0
	p := dynamodb.NewQueryPaginator(s.db, in)
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return 0, fmt.Errorf("count functions of %s: %w", tenant, err)
		}
		n += int(page.Count)
	}
	return n, nil
}

// DeleteFunction removes the function if its version is still prev (0: any version);
// not_found if it does not exist, conflict if it changed.
func (s *Store) DeleteFunction(ctx context.Context, tenant, name string, prev int) error {
	cond, vals := "attribute_exists(PK)", map[string]types.AttributeValue(nil)
	if prev != 0 {
		cond, vals = "attribute_exists(PK) AND #i.version = :v", map[string]types.AttributeValue{":v": num(prev)}
	}
	in := &dynamodb.DeleteItemInput{
		TableName: &s.table, Key: key(tenantPK(tenant), fnPrefix+name),
		ConditionExpression: aws.String(cond), ExpressionAttributeValues: vals,
	}
	if prev != 0 {
		in.ExpressionAttributeNames = map[string]string{"#i": "item"}
	}
	_, err := s.db.DeleteItem(ctx, in)
	if isConditionFailed(err) {
		if _, gerr := s.GetFunction(ctx, tenant, name); gerr != nil {
			return gerr
		}
		return fnhook.Errorf(fnhook.CodeConflict, "function %q was changed concurrently", name)
	}
	if err != nil {
		return fmt.Errorf("delete function %s/%s: %w", tenant, name, err)
	}
	return nil
}

// Waiter is a function version waiting for a module to be built.
type Waiter struct {
	Tenant   string `dynamodbav:"tenant"`
	Function string `dynamodbav:"function"`
	Version  int    `dynamodbav:"version"`
}

// AddWaiter records that the function version waits for module name@version.
func (s *Store) AddWaiter(ctx context.Context, name, version string, w Waiter) error {
	if err := put(ctx, s, moduleKey(name, version), waitSK(w.Tenant, w.Function), w, "", nil); err != nil {
		return fmt.Errorf("add waiter on %s: %w", fnhook.ModuleKey(name, version), err)
	}
	return nil
}

// Waiters returns the function versions waiting for module name@version.
func (s *Store) Waiters(ctx context.Context, name, version string) ([]Waiter, error) {
	ws, _, err := query[Waiter](ctx, s, moduleKey(name, version), "WAIT#", "", 0)
	return ws, err
}

// RemoveWaiter forgets that the function waits for module name@version.
func (s *Store) RemoveWaiter(ctx context.Context, name, version, tenant, fn string) error {
	return s.delete(ctx, moduleKey(name, version), waitSK(tenant, fn), "", nil)
}

// BuildingFunctions returns every function whose status is building (a scan; used at
// start-up and periodically to converge statuses after missed events).
func (s *Store) BuildingFunctions(ctx context.Context) ([]fnhook.Function, error) {
	in := &dynamodb.ScanInput{
		TableName:                &s.table,
		FilterExpression:         aws.String("begins_with(SK, :p) AND #i.#s = :b"),
		ExpressionAttributeNames: map[string]string{"#i": "item", "#s": "status"},
		ExpressionAttributeValues: map[string]types.AttributeValue{
			":p": str(fnPrefix), ":b": str(fnhook.StatusBuilding),
		},
		ConsistentRead: aws.Bool(true),
	}
	return scan[fnhook.Function](ctx, s, in)
}

package store

import (
	"context"
	"fmt"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	fnhook "github.com/fnhook/fnhook/libs"
)

// PutTenant creates or replaces a tenant record.
func (s *Store) PutTenant(ctx context.Context, t fnhook.Tenant) error {
	if err := put(ctx, s, tenantPK(t.Name), metaSK, t, "", nil); err != nil {
		return fmt.Errorf("put tenant %s: %w", t.Name, err)
	}
	return nil
}

// GetTenant returns the tenant, or a not_found error.
func (s *Store) GetTenant(ctx context.Context, name string) (fnhook.Tenant, error) {
	t, ok, err := get[fnhook.Tenant](ctx, s, tenantPK(name), metaSK)
	if err != nil {
		return t, err
	}
	if !ok {
		return t, fnhook.Errorf(fnhook.CodeNotFound, "tenant %q does not exist", name)
	}
	return t, nil
}

// ListTenants returns every tenant (a scan: tenants are few, and only admins list them).
func (s *Store) ListTenants(ctx context.Context) ([]fnhook.Tenant, error) {
	in := &dynamodb.ScanInput{
		TableName:        &s.table,
		FilterExpression: aws.String("SK = :m AND begins_with(PK, :t)"),
		ExpressionAttributeValues: map[string]types.AttributeValue{
			":m": str(metaSK), ":t": str("TENANT#"),
		},
		ConsistentRead: aws.Bool(true),
	}
	var out []fnhook.Tenant
	p := dynamodb.NewScanPaginator(s.db, in)
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("list tenants: %w", err)
		}
		var items []keyed[fnhook.Tenant]
		if err := attributevalue.UnmarshalListOfMaps(page.Items, &items); err != nil {
			return nil, err
		}
		for _, k := range items {
			out = append(out, k.Item)
		}
	}
	return out, nil
}

// DeleteTenant removes the tenant and every item under it (tokens, functions) and
// returns the functions it had.
func (s *Store) DeleteTenant(ctx context.Context, name string) ([]fnhook.Function, error) {
	fns, _, err := s.ListFunctions(ctx, name, 0, "")
	if err != nil {
		return nil, err
	}
	in := &dynamodb.QueryInput{
		TableName:                 &s.table,
		KeyConditionExpression:    aws.String("PK = :pk"),
		ExpressionAttributeValues: map[string]types.AttributeValue{":pk": str(tenantPK(name))},
		ProjectionExpression:      aws.String("PK, SK"),
	}
	p := dynamodb.NewQueryPaginator(s.db, in)
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("delete tenant %s: %w", name, err)
		}
		for _, it := range page.Items {
			sk := it["SK"].(*types.AttributeValueMemberS).Value
			if err := s.delete(ctx, tenantPK(name), sk, "", nil); err != nil {
				return nil, fmt.Errorf("delete tenant %s item %s: %w", name, sk, err)
			}
		}
	}
	for _, f := range fns {
		for n, v := range f.ResolvedDependencies {
			_ = s.delete(ctx, moduleKey(n, v), waitSK(f.Tenant, f.Name), "", nil)
		}
	}
	return fns, nil
}

// PutToken stores a token's hash.
func (s *Store) PutToken(ctx context.Context, t fnhook.Token) error {
	if err := put(ctx, s, tenantPK(t.Tenant), "TOKEN#"+t.ID, t, "attribute_not_exists(PK)", nil); err != nil {
		return fmt.Errorf("put token: %w", err)
	}
	return nil
}

// GetToken returns the stored token, or not_found.
func (s *Store) GetToken(ctx context.Context, tenant, id string) (fnhook.Token, error) {
	t, ok, err := get[fnhook.Token](ctx, s, tenantPK(tenant), "TOKEN#"+id)
	if err != nil {
		return t, err
	}
	if !ok {
		return t, fnhook.Errorf(fnhook.CodeNotFound, "token %q does not exist", id)
	}
	return t, nil
}

// DeleteToken revokes a token; not_found if it did not exist.
func (s *Store) DeleteToken(ctx context.Context, tenant, id string) error {
	err := s.delete(ctx, tenantPK(tenant), "TOKEN#"+id, "attribute_exists(PK)", nil)
	if isConditionFailed(err) {
		return fnhook.Errorf(fnhook.CodeNotFound, "token %q does not exist", id)
	}
	return err
}

func waitSK(tenant, fn string) string { return "WAIT#" + tenant + "/" + fn }

// splitWait parses a WAIT# sort key back into tenant and function.
func splitWait(sk string) (tenant, fn string, ok bool) {
	rest, ok := strings.CutPrefix(sk, "WAIT#")
	if !ok {
		return "", "", false
	}
	return strings.Cut(rest, "/")
}

// Package store keeps fnhook's records in DynamoDB: tenants, token hashes, function
// manifests, module build records, and which functions wait on which module.
//
// One table, single-table design: PK/SK strings.
//
//	TENANT#<t>      META              the tenant
//	TENANT#<t>      TOKEN#<id>        a token's hash
//	TENANT#<t>      FN#<name>         a function manifest
//	MODULE#<n@v>    META              a module's build record
//	MODULE#<n@v>    WAIT#<t>/<name>   a function version waiting for that module
//
// Every write that could race is conditional; a lost condition is an *fnhook.Error with
// code conflict, so callers can answer 409 (or 412 for If-Match).
package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	fnhook "github.com/fnhook/fnhook/libs"
)

// Config says where DynamoDB is and which table to use.
type Config struct {
	Endpoint  string // empty: AWS's own endpoint for Region
	Region    string
	AccessKey string
	SecretKey string
	Table     string
}

// Store is the DynamoDB-backed record store. It is safe for concurrent use.
type Store struct {
	db    *dynamodb.Client
	table string
}

// Open returns a Store and creates the table if it does not exist yet.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	opts := dynamodb.Options{
		Region:           cfg.Region,
		Credentials:      credentials.NewStaticCredentialsProvider(cfg.AccessKey, cfg.SecretKey, ""),
		RetryMaxAttempts: 3,
	}
	if cfg.Endpoint != "" {
		opts.BaseEndpoint = aws.String(cfg.Endpoint)
	}
	s := &Store{db: dynamodb.New(opts), table: cfg.Table}
	if err := s.ensureTable(ctx); err != nil {
		return nil, fmt.Errorf("dynamodb at %s, table %s: %w", cfg.Endpoint, cfg.Table, err)
	}
	return s, nil
}

// Client returns the DynamoDB client (for tests and health checks).
func (s *Store) Client() *dynamodb.Client { return s.db }

// Table is the table's name.
func (s *Store) Table() string { return s.table }

// Ping checks that the table answers.
func (s *Store) Ping(ctx context.Context) error {
	_, err := s.db.DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: &s.table})
	return err
}

func (s *Store) ensureTable(ctx context.Context) error {
	_, err := s.db.DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: &s.table})
	if err == nil {
		return nil
	}
	var nf *types.ResourceNotFoundException
	if !errors.As(err, &nf) {
		return err
	}
	_, err = s.db.CreateTable(ctx, &dynamodb.CreateTableInput{
		TableName: &s.table,
		AttributeDefinitions: []types.AttributeDefinition{
			{AttributeName: aws.String("PK"), AttributeType: types.ScalarAttributeTypeS},
			{AttributeName: aws.String("SK"), AttributeType: types.ScalarAttributeTypeS},
		},
		KeySchema: []types.KeySchemaElement{
			{AttributeName: aws.String("PK"), KeyType: types.KeyTypeHash},
			{AttributeName: aws.String("SK"), KeyType: types.KeyTypeRange},
		},
		BillingMode: types.BillingModePayPerRequest,
	})
	var inUse *types.ResourceInUseException
	if err != nil && !errors.As(err, &inUse) {
		return err
	}
	w := dynamodb.NewTableExistsWaiter(s.db)
	return w.Wait(ctx, &dynamodb.DescribeTableInput{TableName: &s.table}, 30*time.Second)
}

// DeleteTable drops the table (tests only).
func (s *Store) DeleteTable(ctx context.Context) error {
	_, err := s.db.DeleteTable(ctx, &dynamodb.DeleteTableInput{TableName: &s.table})
	return err
}

func tenantPK(t string) string     { return "TENANT#" + t }
func moduleKey(n, v string) string { return "MODULE#" + fnhook.ModuleKey(n, v) }

const metaSK = "META"

type keyed[T any] struct {
	PK   string `dynamodbav:"PK"`
	SK   string `dynamodbav:"SK"`
	Item T      `dynamodbav:"item"`
}

func key(pk, sk string) map[string]types.AttributeValue {
	return map[string]types.AttributeValue{
		"PK": &types.AttributeValueMemberS{Value: pk},
		"SK": &types.AttributeValueMemberS{Value: sk},
	}
}

func isConditionFailed(err error) bool {
	var cf *types.ConditionalCheckFailedException
	return errors.As(err, &cf)
}

// put writes item under pk/sk when cond holds (empty cond: unconditionally).
func put[T any](ctx context.Context, s *Store, pk, sk string, item T, cond string, vals map[string]types.AttributeValue) error {
	av, err := attributevalue.MarshalMap(keyed[T]{PK: pk, SK: sk, Item: item})
	if err != nil {
		return fmt.Errorf("marshal %s/%s: %w", pk, sk, err)
	}
	in := &dynamodb.PutItemInput{TableName: &s.table, Item: av}
	if cond != "" {
		in.ConditionExpression = aws.String(cond)
		in.ExpressionAttributeNames = condNames(cond)
		if len(vals) > 0 {
			in.ExpressionAttributeValues = vals
		}
	}
	_, err = s.db.PutItem(ctx, in)
	return err
}

// get reads the item under pk/sk; found is false when there is none.
func get[T any](ctx context.Context, s *Store, pk, sk string) (item T, found bool, err error) {
	out, err := s.db.GetItem(ctx, &dynamodb.GetItemInput{TableName: &s.table, Key: key(pk, sk), ConsistentRead: aws.Bool(true)})
	if err != nil {
		return item, false, fmt.Errorf("get %s/%s: %w", pk, sk, err)
	}
	if out.Item == nil {
		return item, false, nil
	}
	var k keyed[T]
	if err := attributevalue.UnmarshalMap(out.Item, &k); err != nil {
		return item, false, fmt.Errorf("unmarshal %s/%s: %w", pk, sk, err)
	}
	return k.Item, true, nil
}

// query returns the items under pk whose SK begins with prefix, up to limit (0: all),
// starting after the SK after (empty: from the start). next is the last SK returned when
// more items may follow.
func query[T any](ctx context.Context, s *Store, pk, prefix, after string, limit int) (items []T, next string, err error) {
	in := &dynamodb.QueryInput{
		TableName:              &s.table,
		KeyConditionExpression: aws.String("PK = :pk AND begins_with(SK, :p)"),
		ExpressionAttributeValues: map[string]types.AttributeValue{
			":pk": &types.AttributeValueMemberS{Value: pk},
			":p":  &types.AttributeValueMemberS{Value: prefix},
		},
		ConsistentRead: aws.Bool(true),
	}
	if after != "" {
		in.ExclusiveStartKey = key(pk, after)
	}
	for {
		if limit > 0 {
			in.Limit = aws.Int32(int32(limit - len(items)))
		}
		out, err := s.db.Query(ctx, in)
		if err != nil {
			return nil, "", fmt.Errorf("query %s: %w", pk, err)
		}
		var page []keyed[T]
		if err := attributevalue.UnmarshalListOfMaps(out.Items, &page); err != nil {
			return nil, "", fmt.Errorf("unmarshal %s: %w", pk, err)
		}
		for _, k := range page {
			items = append(items, k.Item)
			next = k.SK
		}
		if out.LastEvaluatedKey == nil {
			return items, "", nil
		}
		if limit > 0 && len(items) >= limit {
			return items, next, nil
		}
		in.ExclusiveStartKey = out.LastEvaluatedKey
	}
}

func (s *Store) delete(ctx context.Context, pk, sk, cond string, vals map[string]types.AttributeValue) error {
	in := &dynamodb.DeleteItemInput{TableName: &s.table, Key: key(pk, sk)}
	if cond != "" {
		in.ConditionExpression = aws.String(cond)
		in.ExpressionAttributeValues = vals
	}
	_, err := s.db.DeleteItem(ctx, in)
	return err
}

func num(n int) *types.AttributeValueMemberN {
	return &types.AttributeValueMemberN{Value: fmt.Sprint(n)}
}

func str(v string) *types.AttributeValueMemberS { return &types.AttributeValueMemberS{Value: v} }

// scan runs a filtered scan and returns every matching item.
func scan[T any](ctx context.Context, s *Store, in *dynamodb.ScanInput) ([]T, error) {
	var out []T
	p := dynamodb.NewScanPaginator(s.db, in)
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("scan %s: %w", s.table, err)
		}
		var items []keyed[T]
		if err := attributevalue.UnmarshalListOfMaps(page.Items, &items); err != nil {
			return nil, err
		}
		for _, k := range items {
			out = append(out, k.Item)
		}
	}
	return out, nil
}

// condNames returns the expression attribute names a condition uses: #i is the item
// attribute, #s its status, #o its owner (status and owner are reserved words).
func condNames(cond string) map[string]string {
	names := map[string]string{}
	for ph, name := range map[string]string{"#i": "item", "#s": "status", "#o": "owner"} {
		if strings.Contains(cond, ph) {
			names[ph] = name
		}
	}
	if len(names) == 0 {
		return nil
	}
	return names
}

package ingest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/tus/tusd/v2/pkg/handler"
	"github.com/tus/tusd/v2/pkg/s3store"
)

// s3Backend is tusd's s3store on one bucket. tusd keeps <courier-id> (the
// object, a multipart upload until complete), <courier-id>.info and
// <courier-id>.part (a tail smaller than the minimum part size); Courier
// adds <courier-id>.sha256state, the running digest. Keeping the state in
// the bucket lets any ingest instance (after a restart, or another one
// behind the load balancer) carry on without reading the object again.
type s3Backend struct {
	bucket string
	client *s3.Client
	st     s3store.S3Store
}

// newS3Backend opens s3://BUCKET?endpoint=URL&region=R[&part-size=BYTES].
// Credentials come from the AWS default chain (environment, shared files,
// instance roles). A custom endpoint uses path-style addressing, which
// S3-compatible services expect.
func newS3Backend(ctx context.Context, u *url.URL) (backend, error) {
	bucket := u.Host
	if bucket == "" {
		return nil, fmt.Errorf("%w: store s3://: bucket name missing (s3://BUCKET?endpoint=URL&region=R)", ErrInvalidOptions)
	}
	q := u.Query()
	var opts []func(*awsconfig.LoadOptions) error
	if r := q.Get("region"); r != "" {
		opts = append(opts, awsconfig.WithRegion(r))
	}
	cfg, err := awsconfig.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("%w: store s3://%s: AWS configuration: %w", ErrInvalidOptions, bucket, err)
	}
	if cfg.Region == "" {
		cfg.Region = "us-east-1"
	}
	endpoint := q.Get("endpoint")
	client := s3.NewFromConfig(cfg, func(o *s3.Options) {
		if endpoint != "" {
			o.BaseEndpoint = aws.String(endpoint)
			o.UsePathStyle = true
		}
		// Only send/verify SDK checksums where S3 requires them: many
		// S3-compatible services reject the newer default trailers.
		o.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
		o.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
	})
	st := s3store.New(bucket, client)
	if ps := q.Get("part-size"); ps != "" {
		n, err := strconv.ParseInt(ps, 10, 64)
		if err != nil || n < 5<<20 {
			return nil, fmt.Errorf("%w: store s3://%s: part-size must be an integer >= 5242880, got %q", ErrInvalidOptions, bucket, ps)
		}
		st.PreferredPartSize = n
	}
	b := &s3Backend{bucket: bucket, client: client, st: st}
	if _, err := client.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(bucket)}); err != nil {
		return nil, fmt.Errorf("store s3://%s: bucket not reachable at %s: %w", bucket, endpointName(endpoint), err)
	}
	return b, nil
}

func endpointName(e string) string {
	if e == "" {
		return "AWS"
	}
	return e
}

func (b *s3Backend) registerMetrics(reg prometheus.Registerer) { b.st.RegisterMetrics(reg) }

func (b *s3Backend) store() handler.DataStore                { return b.st }
func (b *s3Backend) terminater() handler.TerminaterDataStore { return b.st }

// objectID is the key part of a tusd s3store upload id "<object>+<multipart>".
func objectID(id string) string {
	obj, _, _ := strings.Cut(id, "+")
	return obj
}

func isNotFound(err error) bool {
	var nsk *types.NoSuchKey
	var nf *types.NotFound
	if errors.As(err, &nsk) || errors.As(err, &nf) {
		return true
	}
	var ae smithy.APIError
	return errors.As(err, &ae) && (ae.ErrorCode() == "NoSuchKey" || ae.ErrorCode() == "NotFound")
}

func (b *s3Backend) getSmall(ctx context.Context, key string) ([]byte, error) {
	out, err := b.client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(b.bucket), Key: aws.String(key)})
	if isNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("s3://%s/%s: %w", b.bucket, key, err)
	}
	defer out.Body.Close()
	data, err := io.ReadAll(io.LimitReader(out.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("s3://%s/%s: %w", b.bucket, key, err)
	}
	return data, nil
}

func (b *s3Backend) lookup(ctx context.Context, courierID string) (string, error) {
	data, err := b.getSmall(ctx, courierID+".info")
	if err != nil || data == nil {
		return "", err
	}
	var info handler.FileInfo
	if err := json.Unmarshal(data, &info); err != nil || info.ID == "" {
		return "", fmt.Errorf("s3://%s/%s.info: %w (%v)", b.bucket, courierID, errTornInfo, err)
	}
	return info.ID, nil
}

func (b *s3Backend) loadState(ctx context.Context, id string) ([]byte, error) {
	return b.getSmall(ctx, objectID(id)+stateSuffix)
}

func (b *s3Backend) saveState(ctx context.Context, id string, data []byte) error {
	key := objectID(id) + stateSuffix
	_, err := b.client.PutObject(ctx, &s3.PutObjectInput{
		Bucket: aws.String(b.bucket), Key: aws.String(key),
		Body: bytes.NewReader(data), ContentLength: aws.Int64(int64(len(data))),
	})
	if err != nil {
		return fmt.Errorf("s3://%s/%s: %w", b.bucket, key, err)
	}
	return nil
}

func (b *s3Backend) deleteState(ctx context.Context, id string) error {
	key := objectID(id) + stateSuffix
	_, err := b.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(b.bucket), Key: aws.String(key)})
	if err != nil && !isNotFound(err) {
		return fmt.Errorf("s3://%s/%s: %w", b.bucket, key, err)
	}
	return nil
}

func (b *s3Backend) purge(ctx context.Context, id string) error { return nil }

func (b *s3Backend) discard(ctx context.Context, courierID string) error {
	var errs []error
	for _, key := range []string{courierID + ".info", courierID + ".part", courierID + stateSuffix, courierID} {
		_, err := b.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(b.bucket), Key: aws.String(key)})
		if err != nil && !isNotFound(err) {
			errs = append(errs, fmt.Errorf("s3://%s/%s: %w", b.bucket, key, err))
		}
	}
	mp := s3.NewListMultipartUploadsPaginator(b.client, &s3.ListMultipartUploadsInput{Bucket: aws.String(b.bucket), Prefix: aws.String(courierID)})
	for mp.HasMorePages() {
		page, err := mp.NextPage(ctx)
		if err != nil {
			errs = append(errs, fmt.Errorf("s3://%s: list multipart uploads: %w", b.bucket, err))
			break
		}
		for _, u := range page.Uploads {
			if aws.ToString(u.Key) != courierID {
				continue
			}
			if _, err := b.client.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{
				Bucket: aws.String(b.bucket), Key: u.Key, UploadId: u.UploadId,
			}); err != nil && !isNotFound(err) {
				errs = append(errs, fmt.Errorf("s3://%s/%s: abort multipart upload: %w", b.bucket, courierID, err))
			}
		}
	}
	return errors.Join(errs...)
}

func (b *s3Backend) ready(ctx context.Context) error {
	if _, err := b.client.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(b.bucket)}); err != nil {
		return fmt.Errorf("s3://%s: %w", b.bucket, err)
	}
	return nil
}

// abandoned lists incomplete uploads whose .info, .part and digest state
// were all last written before before. It also aborts multipart uploads
// that never got an .info (a crash while creating) once they are that old.
func (b *s3Backend) abandoned(ctx context.Context, before time.Time) ([]string, error) {
	touched := map[string]time.Time{}
	infos := map[string]bool{}
	p := s3.NewListObjectsV2Paginator(b.client, &s3.ListObjectsV2Input{Bucket: aws.String(b.bucket)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("s3://%s: list objects: %w", b.bucket, err)
		}
		for _, o := range page.Contents {
			key := aws.ToString(o.Key)
			obj, suffix, ok := strings.Cut(key, ".")
			if !ok {
				continue
			}
			switch suffix {
			case "info":
				infos[obj] = true
			case "part", strings.TrimPrefix(stateSuffix, "."):
			default:
				continue
			}
			if t := aws.ToTime(o.LastModified); t.After(touched[obj]) {
				touched[obj] = t
			}
		}
	}
	var out []string
	for obj := range infos {
		if !touched[obj].Before(before) {
			continue
		}
		id, err := b.lookup(ctx, obj)
		if err != nil || id == "" {
			continue
		}
		up, err := b.st.GetUpload(ctx, id)
		if err != nil {
			continue
		}
		info, err := up.GetInfo(ctx)
		if err != nil || (!info.SizeIsDeferred && info.Offset == info.Size) {
			continue
		}
		out = append(out, id)
	}

	mp := s3.NewListMultipartUploadsPaginator(b.client, &s3.ListMultipartUploadsInput{Bucket: aws.String(b.bucket)})
	for mp.HasMorePages() {
		page, err := mp.NextPage(ctx)
		if err != nil {
			return out, fmt.Errorf("s3://%s: list multipart uploads: %w", b.bucket, err)
		}
		for _, u := range page.Uploads {
			key := aws.ToString(u.Key)
			if infos[key] || !aws.ToTime(u.Initiated).Before(before) {
				continue
			}
			_, err := b.client.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{
				Bucket: aws.String(b.bucket), Key: u.Key, UploadId: u.UploadId,
			})
			if err != nil {
				return out, fmt.Errorf("s3://%s/%s: abort orphaned multipart upload: %w", b.bucket, key, err)
			}
		}
	}
	return out, nil
}

func (b *s3Backend) lastTouched(ctx context.Context, id string) (time.Time, error) {
	var touched time.Time
	found := false
	obj := objectID(id)
	for _, key := range []string{obj + ".info", obj + ".part", obj + stateSuffix} {
		out, err := b.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(b.bucket), Key: aws.String(key)})
		if isNotFound(err) {
			continue
		}
		if err != nil {
			return touched, fmt.Errorf("s3://%s/%s: %w", b.bucket, key, err)
		}
		found = true
		if t := aws.ToTime(out.LastModified); t.After(touched) {
			touched = t
		}
	}
	if !found {
		return touched, handler.ErrNotFound
	}
	return touched, nil
}

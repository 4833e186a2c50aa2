-- Points this scenario's cluster at Garage (S3 on loopback) under the prefix in the psql variable
-- s3_prefix; run.sh passes the endpoint, bucket and keys as variables (the keys never echoed:
-- psql prints the variable names). Each scenario cluster has a new system identifier, hence a
-- namespace of its own in the bucket.
\set s3_repository 's3://' :s3_bucket '/' :s3_prefix
ALTER SYSTEM SET backstop.repository = :'s3_repository';
ALTER SYSTEM SET backstop.s3_endpoint = :'s3_endpoint';
ALTER SYSTEM SET backstop.s3_region = 'garage';
ALTER SYSTEM SET backstop.s3_force_path_style = on;
ALTER SYSTEM SET backstop.s3_access_key_id = :'s3_access_key_id';
ALTER SYSTEM SET backstop.s3_secret_access_key = :'s3_secret_access_key';
SELECT pg_reload_conf();
SELECT pg_sleep(1);

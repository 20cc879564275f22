"""The AWS boundary: the only package that imports boto3 or botocore. Session and clients per
service and region, credentials per account, signing per target, request counting, the one
paginate helper, and errors that name the IAM action to grant."""

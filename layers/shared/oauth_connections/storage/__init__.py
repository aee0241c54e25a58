"""Storage: the DynamoDB items of the one table and their data access, one module per aggregate, over a shared
collection shape (collection) and the table binding (table, binding). The only pynamodb/boto3 DynamoDB user. May import
core/ only.
"""

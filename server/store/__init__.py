"""Storage: the database, the models, migrations, pagination, and every statement written as
SQL text or per dialect (ledger, leases, outcomes, user upserts, segment conditions). No module
outside this package holds SQL text or asks which database is open."""

"""a job's caps on model calls and tokens (budgets)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""
from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('jobs') as batch:
        batch.add_column(sa.Column('max_calls', sa.Integer(), nullable=True))
        batch.add_column(sa.Column('max_tokens_total', sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('jobs') as batch:
        batch.drop_column('max_tokens_total')
        batch.drop_column('max_calls')

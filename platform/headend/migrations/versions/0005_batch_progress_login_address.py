"""Print batches remember their last progress (a batch whose job was lost shows as stalled and
runs again); failed portal logins remember the client address (a throttle per address too).

Revision ID: 0005
Revises: 0004
"""
import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('portal_login_failure', schema=None) as batch_op:
        batch_op.add_column(sa.Column('address', sa.String(length=64), nullable=True))
        batch_op.create_index('ix_portal_login_failure_address',
                              ['tenant_id', 'address', 'failed_at'], unique=False)

    with op.batch_alter_table('print_batch', schema=None) as batch_op:
        batch_op.add_column(sa.Column('progress_at', sa.DateTime(), nullable=True))


def downgrade():
    with op.batch_alter_table('print_batch', schema=None) as batch_op:
        batch_op.drop_column('progress_at')

    with op.batch_alter_table('portal_login_failure', schema=None) as batch_op:
        batch_op.drop_index('ix_portal_login_failure_address')
        batch_op.drop_column('address')

"""refused instances: re-sends of a known SOP Instance UID under another patient or study

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05 18:20:00.000000

A SOP Instance UID names one instance for ever; a re-send that carries it under another Patient ID or Study
Instance UID is refused (the stored instance stays where it is) and recorded here for the admin page. The row
holds UIDs, AE title and host only: no patient data.
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "refused_instance",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("sop_instance_uid", sa.String(64), nullable=False),
        sa.Column("instance_id", sa.Integer(), sa.ForeignKey("instance.id"), nullable=True),
        sa.Column("stored_study_instance_uid", sa.String(64), nullable=False),
        sa.Column("sent_study_instance_uid", sa.String(64), nullable=False),
        sa.Column("patient_id_differs", sa.Boolean(), nullable=False),
        sa.Column("calling_ae", sa.String(16), nullable=False),
        sa.Column("calling_host", sa.String(255), nullable=False),
        sa.Column("refused_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_refused_instance_refused_at", "refused_instance", ["refused_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_refused_instance_refused_at", table_name="refused_instance")
    op.drop_table("refused_instance")

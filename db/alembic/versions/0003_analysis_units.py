"""analysis units

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04 18:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "analysis_unit",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("members", sa.JSON(), nullable=False),
        sa.Column("supersedes_unit_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["job.id"]),
        sa.ForeignKeyConstraint(["study_id"], ["study.id"]),
        sa.ForeignKeyConstraint(["supersedes_unit_id"], ["analysis_unit.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("key"),
    )
    op.create_index(op.f("ix_analysis_unit_study_id"), "analysis_unit", ["study_id"], unique=False)
    op.create_index(op.f("ix_analysis_unit_job_id"), "analysis_unit", ["job_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_analysis_unit_job_id"), table_name="analysis_unit")
    op.drop_index(op.f("ix_analysis_unit_study_id"), table_name="analysis_unit")
    op.drop_table("analysis_unit")

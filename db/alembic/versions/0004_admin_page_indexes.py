"""indexes for the admin page's search, filters and health check

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05 13:30:00.000000

The studies list searches by patient ID, accession number and study date and filters by the state of a study's
series; the transfers page filters by destination; /healthz asks when a worker last took a job. Without these
indexes each of those reads the whole table (100,000 studies: tens of milliseconds per page and growing).
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_study_patient_id", "study", ["patient_id"], unique=False)
    op.create_index("ix_study_accession_number", "study", ["accession_number"], unique=False)
    op.create_index("ix_study_study_date", "study", ["study_date"], unique=False)
    op.create_index("ix_series_state_study_id", "series", ["state", "study_id"], unique=False)
    op.create_index("ix_job_started_at", "job", ["started_at"], unique=False)
    op.create_index("ix_transfer_ae_title", "transfer", ["ae_title"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_transfer_ae_title", table_name="transfer")
    op.drop_index("ix_job_started_at", table_name="job")
    op.drop_index("ix_series_state_study_id", table_name="series")
    op.drop_index("ix_study_study_date", table_name="study")
    op.drop_index("ix_study_accession_number", table_name="study")
    op.drop_index("ix_study_patient_id", table_name="study")

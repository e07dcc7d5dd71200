"""training programme: training sets and cases, reader aliases, accreditation, web users' roles

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05 18:20:00.000000

Web users created before roles existed keep everything they could see: they become admins.
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "training_set",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("auto_consensus", sa.Boolean(), nullable=False),
        sa.Column("criteria", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "training_case",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("training_set_id", sa.Integer(), nullable=False),
        sa.Column("study_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("reference_policy", sa.String(length=32), nullable=True),
        sa.Column("gold_standard_reader", sa.String(length=64), nullable=True),
        sa.Column("label", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(["training_set_id"], ["training_set.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("training_set_id", "study_instance_uid"),
    )
    op.create_index("ix_training_case_training_set_id", "training_case", ["training_set_id"], unique=False)
    op.create_index("ix_training_case_study_instance_uid", "training_case", ["study_instance_uid"], unique=False)
    op.create_table(
        "reader_alias",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("pattern", sa.String(length=128), nullable=False),
        sa.Column("reader_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["reader_id"], ["reader.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("pattern"),
    )
    op.create_index("ix_reader_alias_reader_id", "reader_alias", ["reader_id"], unique=False)
    op.create_table(
        "accreditation",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("reader_id", sa.Integer(), nullable=False),
        sa.Column("training_set_id", sa.Integer(), nullable=False),
        sa.Column("met_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("criteria", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["reader_id"], ["reader.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["training_set_id"], ["training_set.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("reader_id", "training_set_id"),
    )
    op.create_index("ix_accreditation_reader_id", "accreditation", ["reader_id"], unique=False)
    op.create_index("ix_accreditation_training_set_id", "accreditation", ["training_set_id"], unique=False)
    # The server default fills the existing rows: every user created before roles existed is an admin.
    with op.batch_alter_table("web_user") as batch:
        batch.add_column(sa.Column("role", sa.String(length=16), server_default="admin", nullable=False))
        batch.add_column(sa.Column("reader_id", sa.Integer(), nullable=True))
        batch.create_foreign_key("fk_web_user_reader_id", "reader", ["reader_id"], ["id"], ondelete="SET NULL")
        batch.create_index("ix_web_user_reader_id", ["reader_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("web_user") as batch:
        batch.drop_index("ix_web_user_reader_id")
        batch.drop_constraint("fk_web_user_reader_id", type_="foreignkey")
        batch.drop_column("reader_id")
        batch.drop_column("role")
    op.drop_index("ix_accreditation_training_set_id", table_name="accreditation")
    op.drop_index("ix_accreditation_reader_id", table_name="accreditation")
    op.drop_table("accreditation")
    op.drop_index("ix_reader_alias_reader_id", table_name="reader_alias")
    op.drop_table("reader_alias")
    op.drop_index("ix_training_case_study_instance_uid", table_name="training_case")
    op.drop_index("ix_training_case_training_set_id", table_name="training_case")
    op.drop_table("training_case")
    op.drop_table("training_set")

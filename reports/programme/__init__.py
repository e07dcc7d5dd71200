"""The training programme: people, training sets, what each reader did on them, and accreditation.

The dataclasses of ``model`` are what the PDF and web reports render; ``queries`` and ``accreditation`` fill
them from the database so that those reports never query it themselves.
"""

"""The Celery application. Settings come from ``celeryconfig``, which reads ours."""

from celery import Celery

app = Celery("edgecelery")
app.config_from_object("celeryconfig")


def _install_intake() -> None:
    """``--intake`` makes a worker consume the intake queue (the argo worker passes it)."""
    from click import Option

    from workflows.receiver import IntakeConsumer

    app.user_options["worker"].add(
        Option(["--intake"], is_flag=True, default=False, help="Consume the intake queue.")
    )
    app.steps["consumer"].add(IntakeConsumer)


_install_intake()

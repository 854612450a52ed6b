"""Errors biasgrid reports to the user."""


class InputError(Exception):
    """Bad input (file, field, group, option or config value): reported with exit code 2.

    The message names what is wrong and what was expected; nothing is written before it is raised.
    """

    exit_code = 2

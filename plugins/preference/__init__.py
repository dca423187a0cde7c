"""gaf.plugins.preference"""

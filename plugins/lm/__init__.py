"""gaf.plugins.lm"""

"""Modbus devices: the engine (one connection per bus), SunSpec, device profiles, scan, proxy.

Entry point for the app: `hems.devices.modbus.service.ModbusService`.
"""

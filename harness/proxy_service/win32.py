"""The thin ctypes layer: advapi32 and kernel32, for the registry, the driver's
device, the console, the elevation check and the Service Control Manager.

Importing this module loads no DLL (it imports on Linux); :func:`load` does,
and needs Windows. Every function is declared once in :data:`PROTOTYPES` in
the spelling of the Windows SDK headers; :data:`SPELLING_CTYPES` gives the
ctypes type of each spelling (pointers and handles are pointer-sized,
DWORD/REGSAM c_uint32, LONG/BOOL c_int32). tests/test_proxy_service.py
assigns each real function to a pointer of the spelled type and compiles it
against mingw-w64's headers, with static asserts that each non-pointer
spelling has the ctypes type's width and signedness.

The logic (what to write, which service status when) lives in core.py; this
module only moves bytes between Python and the API and turns failures into
:class:`~harness.proxy_service.core.StartupError` with a one-line reason.
"""
from __future__ import annotations

import ctypes
import logging
import sys
import threading
import time

from harness import sample_driver as sd

from . import core, options

LOG = logging.getLogger("harness.proxy_service")
IS_WINDOWS = sys.platform == "win32"

# WINAPI callbacks and functions; on x64 stdcall and cdecl are one ABI. Off
# Windows CFUNCTYPE stands in: the types are inspected and tested, never bound to a DLL.
_FUNCTYPE = getattr(ctypes, "WINFUNCTYPE", ctypes.CFUNCTYPE)

# --- callbacks -------------------------------------------------------------------
# VOID (WINAPI *LPSERVICE_MAIN_FUNCTIONW)(DWORD dwNumServicesArgs, LPWSTR *lpServiceArgVectors)
SERVICE_MAIN_FUNCTION = _FUNCTYPE(None, ctypes.c_uint32, ctypes.c_void_p)
# DWORD (WINAPI *LPHANDLER_FUNCTION_EX)(DWORD dwControl, DWORD dwEventType, LPVOID lpEventData, LPVOID lpContext)
HANDLER_FUNCTION_EX = _FUNCTYPE(ctypes.c_uint32, ctypes.c_uint32, ctypes.c_uint32, ctypes.c_void_p, ctypes.c_void_p)
# WINBOOL (WINAPI *PHANDLER_ROUTINE)(DWORD CtrlType)
HANDLER_ROUTINE = _FUNCTYPE(ctypes.c_int32, ctypes.c_uint32)

# C spelling of each callback type (the header typedef) and of our ctypes type.
CALLBACKS = {
    "LPSERVICE_MAIN_FUNCTIONW": (SERVICE_MAIN_FUNCTION, "VOID", ("DWORD", "LPWSTR *")),
    "LPHANDLER_FUNCTION_EX": (HANDLER_FUNCTION_EX, "DWORD", ("DWORD", "DWORD", "LPVOID", "LPVOID")),
    "PHANDLER_ROUTINE": (HANDLER_ROUTINE, "WINBOOL", ("DWORD",)),
}


# --- structures (winsvc.h, winnt.h) ---------------------------------------------------
class SERVICE_STATUS(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint32) for name in (
        "dwServiceType", "dwCurrentState", "dwControlsAccepted", "dwWin32ExitCode",
        "dwServiceSpecificExitCode", "dwCheckPoint", "dwWaitHint")]


class SERVICE_TABLE_ENTRYW(ctypes.Structure):
    _fields_ = [("lpServiceName", ctypes.c_wchar_p), ("lpServiceProc", SERVICE_MAIN_FUNCTION)]


class SERVICE_DESCRIPTIONW(ctypes.Structure):
    _fields_ = [("lpDescription", ctypes.c_wchar_p)]


class TOKEN_ELEVATION(ctypes.Structure):
    _fields_ = [("TokenIsElevated", ctypes.c_uint32)]


class SERVICE_SID_INFO(ctypes.Structure):
    _fields_ = [("dwServiceSidType", ctypes.c_uint32)]


class SERVICE_REQUIRED_PRIVILEGES_INFOW(ctypes.Structure):
    _fields_ = [("pmszRequiredPrivileges", ctypes.c_void_p)]     # a multi-string: c_wchar_p would stop at the first NUL


class SID_AND_ATTRIBUTES(ctypes.Structure):
    _fields_ = [("Sid", ctypes.c_void_p), ("Attributes", ctypes.c_uint32)]


STRUCTURES = (SERVICE_STATUS, SERVICE_TABLE_ENTRYW, SERVICE_DESCRIPTIONW, TOKEN_ELEVATION, SERVICE_SID_INFO,
              SERVICE_REQUIRED_PRIVILEGES_INFOW, SID_AND_ATTRIBUTES)

# --- C spellings -> ctypes ------------------------------------------------------------
_PTR = ctypes.c_void_p
SPELLING_CTYPES = {
    "DWORD": ctypes.c_uint32, "REGSAM": ctypes.c_uint32, "TOKEN_INFORMATION_CLASS": ctypes.c_uint32,
    "LONG": ctypes.c_int32, "WINBOOL": ctypes.c_int32,
    "LPCWSTR": ctypes.c_wchar_p,
    "HKEY": _PTR, "PHKEY": _PTR, "LPDWORD": _PTR, "PDWORD": _PTR, "LPBYTE": _PTR, "const BYTE *": _PTR,
    "LPVOID": _PTR, "HANDLE": _PTR, "PHANDLE": _PTR, "SC_HANDLE": _PTR, "SERVICE_STATUS_HANDLE": _PTR,
    "LPSERVICE_STATUS": _PTR, "const SERVICE_TABLE_ENTRYW *": _PTR, "LPCWSTR *": _PTR,
    "LPSECURITY_ATTRIBUTES": _PTR, "LPOVERLAPPED": _PTR,
    "SE_OBJECT_TYPE": ctypes.c_uint32, "SECURITY_INFORMATION": ctypes.c_uint32,
    "PSID": _PTR, "PSID *": _PTR, "PACL *": _PTR, "PSECURITY_DESCRIPTOR *": _PTR, "HLOCAL": _PTR,
    "LPHANDLER_FUNCTION_EX": HANDLER_FUNCTION_EX, "PHANDLER_ROUTINE": HANDLER_ROUTINE,
}

# name -> (dll, return spelling, ((spelling, parameter), ...)), as in the SDK headers.
PROTOTYPES = {
    # registry (winreg.h)
    "RegOpenKeyExW": ("advapi32", "LONG", (("HKEY", "hKey"), ("LPCWSTR", "lpSubKey"), ("DWORD", "ulOptions"),
                                           ("REGSAM", "samDesired"), ("PHKEY", "phkResult"))),
    "RegQueryValueExW": ("advapi32", "LONG", (("HKEY", "hKey"), ("LPCWSTR", "lpValueName"),
                                              ("LPDWORD", "lpReserved"), ("LPDWORD", "lpType"),
                                              ("LPBYTE", "lpData"), ("LPDWORD", "lpcbData"))),
    "RegSetValueExW": ("advapi32", "LONG", (("HKEY", "hKey"), ("LPCWSTR", "lpValueName"), ("DWORD", "Reserved"),
                                            ("DWORD", "dwType"), ("const BYTE *", "lpData"), ("DWORD", "cbData"))),
    "RegCloseKey": ("advapi32", "LONG", (("HKEY", "hKey"),)),
    # elevation (processthreadsapi.h, securitybaseapi.h)
    "OpenProcessToken": ("advapi32", "WINBOOL", (("HANDLE", "ProcessHandle"), ("DWORD", "DesiredAccess"),
                                                 ("PHANDLE", "TokenHandle"))),
    "GetTokenInformation": ("advapi32", "WINBOOL", (("HANDLE", "TokenHandle"),
                                                    ("TOKEN_INFORMATION_CLASS", "TokenInformationClass"),
                                                    ("LPVOID", "TokenInformation"),
                                                    ("DWORD", "TokenInformationLength"),
                                                    ("PDWORD", "ReturnLength"))),
    # security descriptors (aclapi.h, securitybaseapi.h, winbase.h)
    "GetNamedSecurityInfoW": ("advapi32", "DWORD", (
        ("LPCWSTR", "pObjectName"), ("SE_OBJECT_TYPE", "ObjectType"), ("SECURITY_INFORMATION", "SecurityInfo"),
        ("PSID *", "ppsidOwner"), ("PSID *", "ppsidGroup"), ("PACL *", "ppDacl"), ("PACL *", "ppSacl"),
        ("PSECURITY_DESCRIPTOR *", "ppSecurityDescriptor"))),
    "GetLengthSid": ("advapi32", "DWORD", (("PSID", "pSid"),)),
    "LocalFree": ("kernel32", "HLOCAL", (("HLOCAL", "hMem"),)),
    # Service Control Manager (winsvc.h)
    "OpenSCManagerW": ("advapi32", "SC_HANDLE", (("LPCWSTR", "lpMachineName"), ("LPCWSTR", "lpDatabaseName"),
                                                 ("DWORD", "dwDesiredAccess"))),
    "CreateServiceW": ("advapi32", "SC_HANDLE", (
        ("SC_HANDLE", "hSCManager"), ("LPCWSTR", "lpServiceName"), ("LPCWSTR", "lpDisplayName"),
        ("DWORD", "dwDesiredAccess"), ("DWORD", "dwServiceType"), ("DWORD", "dwStartType"),
        ("DWORD", "dwErrorControl"), ("LPCWSTR", "lpBinaryPathName"), ("LPCWSTR", "lpLoadOrderGroup"),
        ("LPDWORD", "lpdwTagId"), ("LPCWSTR", "lpDependencies"), ("LPCWSTR", "lpServiceStartName"),
        ("LPCWSTR", "lpPassword"))),
    "OpenServiceW": ("advapi32", "SC_HANDLE", (("SC_HANDLE", "hSCManager"), ("LPCWSTR", "lpServiceName"),
                                               ("DWORD", "dwDesiredAccess"))),
    "ChangeServiceConfig2W": ("advapi32", "WINBOOL", (("SC_HANDLE", "hService"), ("DWORD", "dwInfoLevel"),
                                                      ("LPVOID", "lpInfo"))),
    "StartServiceW": ("advapi32", "WINBOOL", (("SC_HANDLE", "hService"), ("DWORD", "dwNumServiceArgs"),
                                              ("LPCWSTR *", "lpServiceArgVectors"))),
    "ControlService": ("advapi32", "WINBOOL", (("SC_HANDLE", "hService"), ("DWORD", "dwControl"),
                                               ("LPSERVICE_STATUS", "lpServiceStatus"))),
    "QueryServiceStatus": ("advapi32", "WINBOOL", (("SC_HANDLE", "hService"),
                                                   ("LPSERVICE_STATUS", "lpServiceStatus"))),
    "DeleteService": ("advapi32", "WINBOOL", (("SC_HANDLE", "hService"),)),
    "CloseServiceHandle": ("advapi32", "WINBOOL", (("SC_HANDLE", "hSCObject"),)),
    "StartServiceCtrlDispatcherW": ("advapi32", "WINBOOL", (("const SERVICE_TABLE_ENTRYW *",
                                                             "lpServiceStartTable"),)),
    "RegisterServiceCtrlHandlerExW": ("advapi32", "SERVICE_STATUS_HANDLE", (
        ("LPCWSTR", "lpServiceName"), ("LPHANDLER_FUNCTION_EX", "lpHandlerProc"), ("LPVOID", "lpContext"))),
    "SetServiceStatus": ("advapi32", "WINBOOL", (("SERVICE_STATUS_HANDLE", "hServiceStatus"),
                                                 ("LPSERVICE_STATUS", "lpServiceStatus"))),
    # kernel32: the driver's device, the console
    "CreateFileW": ("kernel32", "HANDLE", (
        ("LPCWSTR", "lpFileName"), ("DWORD", "dwDesiredAccess"), ("DWORD", "dwShareMode"),
        ("LPSECURITY_ATTRIBUTES", "lpSecurityAttributes"), ("DWORD", "dwCreationDisposition"),
        ("DWORD", "dwFlagsAndAttributes"), ("HANDLE", "hTemplateFile"))),
    "DeviceIoControl": ("kernel32", "WINBOOL", (
        ("HANDLE", "hDevice"), ("DWORD", "dwIoControlCode"), ("LPVOID", "lpInBuffer"), ("DWORD", "nInBufferSize"),
        ("LPVOID", "lpOutBuffer"), ("DWORD", "nOutBufferSize"), ("LPDWORD", "lpBytesReturned"),
        ("LPOVERLAPPED", "lpOverlapped"))),
    "CloseHandle": ("kernel32", "WINBOOL", (("HANDLE", "hObject"),)),
    "GetCurrentProcess": ("kernel32", "HANDLE", ()),
    "SetConsoleCtrlHandler": ("kernel32", "WINBOOL", (("PHANDLER_ROUTINE", "HandlerRoutine"), ("WINBOOL", "Add"))),
}

FUNCTION_TYPES = {
    name: _FUNCTYPE(SPELLING_CTYPES[ret], *(SPELLING_CTYPES[t] for t, _ in params), use_last_error=True)
    for name, (_dll, ret, params) in PROTOTYPES.items()
}

# --- constants (checked against the headers by the tests) --------------------------------
HKEY_LOCAL_MACHINE = 0xFFFFFFFF80000002     # (HKEY)(ULONG_PTR)(LONG)0x80000002: sign-extended on x64
KEY_QUERY_VALUE = 0x0001
KEY_SET_VALUE = 0x0002
KEY_WOW64_64KEY = 0x0100
REG_DWORD = sd.REG_DWORD
REG_MULTI_SZ = sd.REG_MULTI_SZ
ERROR_SUCCESS = 0
ERROR_FILE_NOT_FOUND = 2
ERROR_PATH_NOT_FOUND = 3
ERROR_ACCESS_DENIED = 5
ERROR_INVALID_PARAMETER = 87
ERROR_CALL_NOT_IMPLEMENTED = 120
ERROR_MORE_DATA = 234
ERROR_SERVICE_SPECIFIC_ERROR = 1066
ERROR_SERVICE_DOES_NOT_EXIST = 1060
ERROR_SERVICE_NOT_ACTIVE = 1062
ERROR_FAILED_SERVICE_CONTROLLER_CONNECT = 1063
ERROR_SERVICE_MARKED_FOR_DELETE = 1072
ERROR_SERVICE_EXISTS = 1073
ERROR_SERVICE_ALREADY_RUNNING = 1056
GENERIC_WRITE = 0x40000000
FILE_SHARE_READ = 1
FILE_SHARE_WRITE = 2
OPEN_EXISTING = 3
FILE_ATTRIBUTE_NORMAL = 0x80
TOKEN_QUERY = 0x0008
TokenElevation = 20
CTRL_C_EVENT = 0
CTRL_BREAK_EVENT = 1
CTRL_CLOSE_EVENT = 2
CTRL_LOGOFF_EVENT = 5
CTRL_SHUTDOWN_EVENT = 6
SC_MANAGER_CONNECT = 0x0001
SC_MANAGER_CREATE_SERVICE = 0x0002
SERVICE_QUERY_STATUS = 0x0004
SERVICE_START = 0x0010
SERVICE_STOP = 0x0020
DELETE = 0x00010000
SERVICE_ALL_ACCESS = 0xF01FF
SERVICE_WIN32_OWN_PROCESS = core.SERVICE_WIN32_OWN_PROCESS
SERVICE_AUTO_START = 2
SERVICE_DEMAND_START = 3
SERVICE_ERROR_NORMAL = 1
SERVICE_CONFIG_DESCRIPTION = 1
SERVICE_CONFIG_SERVICE_SID_INFO = 5
SERVICE_CONFIG_REQUIRED_PRIVILEGES_INFO = 6
SERVICE_SID_TYPE_UNRESTRICTED = 1
SE_FILE_OBJECT = 1
OWNER_SECURITY_INFORMATION = 0x1
DACL_SECURITY_INFORMATION = 0x4
TokenUser = 1
SERVICE_STOPPED = core.SERVICE_STOPPED
SERVICE_START_PENDING = core.SERVICE_START_PENDING
SERVICE_STOP_PENDING = core.SERVICE_STOP_PENDING
SERVICE_RUNNING = core.SERVICE_RUNNING
SERVICE_ACCEPT_STOP = core.SERVICE_ACCEPT_STOP
SERVICE_ACCEPT_SHUTDOWN = core.SERVICE_ACCEPT_SHUTDOWN
SERVICE_CONTROL_STOP = core.SERVICE_CONTROL_STOP
SERVICE_CONTROL_INTERROGATE = core.SERVICE_CONTROL_INTERROGATE
SERVICE_CONTROL_SHUTDOWN = core.SERVICE_CONTROL_SHUTDOWN
NO_ERROR = core.NO_ERROR

# name -> value, every one checked against the SDK headers by the tests.
CONSTANTS = {name: globals()[name] for name in (
    "HKEY_LOCAL_MACHINE", "KEY_QUERY_VALUE", "KEY_SET_VALUE", "KEY_WOW64_64KEY", "REG_DWORD", "REG_MULTI_SZ",
    "ERROR_SUCCESS", "ERROR_FILE_NOT_FOUND", "ERROR_PATH_NOT_FOUND", "ERROR_ACCESS_DENIED",
    "ERROR_INVALID_PARAMETER", "ERROR_CALL_NOT_IMPLEMENTED", "ERROR_MORE_DATA",
    "ERROR_SERVICE_SPECIFIC_ERROR", "ERROR_SERVICE_DOES_NOT_EXIST", "ERROR_SERVICE_NOT_ACTIVE",
    "ERROR_FAILED_SERVICE_CONTROLLER_CONNECT", "ERROR_SERVICE_MARKED_FOR_DELETE", "ERROR_SERVICE_EXISTS",
    "ERROR_SERVICE_ALREADY_RUNNING", "GENERIC_WRITE", "FILE_SHARE_READ", "FILE_SHARE_WRITE", "OPEN_EXISTING",
    "FILE_ATTRIBUTE_NORMAL", "TOKEN_QUERY", "TokenElevation", "CTRL_C_EVENT", "CTRL_BREAK_EVENT",
    "CTRL_CLOSE_EVENT", "CTRL_LOGOFF_EVENT", "CTRL_SHUTDOWN_EVENT", "SC_MANAGER_CONNECT",
    "SC_MANAGER_CREATE_SERVICE", "SERVICE_QUERY_STATUS", "SERVICE_START", "SERVICE_STOP", "DELETE",
    "SERVICE_ALL_ACCESS", "SERVICE_WIN32_OWN_PROCESS", "SERVICE_AUTO_START", "SERVICE_DEMAND_START",
    "SERVICE_ERROR_NORMAL", "SERVICE_CONFIG_DESCRIPTION", "SERVICE_CONFIG_SERVICE_SID_INFO",
    "SERVICE_CONFIG_REQUIRED_PRIVILEGES_INFO", "SERVICE_SID_TYPE_UNRESTRICTED", "SE_FILE_OBJECT",
    "OWNER_SECURITY_INFORMATION", "DACL_SECURITY_INFORMATION", "TokenUser", "SERVICE_STOPPED", "SERVICE_START_PENDING",
    "SERVICE_STOP_PENDING", "SERVICE_RUNNING", "SERVICE_ACCEPT_STOP", "SERVICE_ACCEPT_SHUTDOWN",
    "SERVICE_CONTROL_STOP", "SERVICE_CONTROL_INTERROGATE", "SERVICE_CONTROL_SHUTDOWN", "NO_ERROR",
)}
INVALID_HANDLE_VALUE = (1 << 64) - 1       # (HANDLE)-1 as a c_void_p result


# --- loading ---------------------------------------------------------------------------
class Functions:
    """The bound functions (attributes named as in PROTOTYPES) and GetLastError of the last call."""

    def __init__(self, functions: dict):
        missing = set(PROTOTYPES) - set(functions)
        if missing:
            raise ValueError(f"missing functions: {sorted(missing)}")
        self.__dict__.update(functions)

    @staticmethod
    def last_error() -> int:
        return ctypes.get_last_error()  # type: ignore[attr-defined]


def load() -> Functions:
    """Bind every prototype to advapi32/kernel32 (Windows only)."""
    if not IS_WINDOWS:
        raise core.StartupError(f"Windows is required for this command (this is {sys.platform!r}); "
                                f"use `run --target sim` to run the proxy in the simulator",
                                exit_code=core.EXIT_USAGE)
    dlls = {name: ctypes.WinDLL(name, use_last_error=True)  # type: ignore[attr-defined]
            for name in {dll for dll, _, _ in PROTOTYPES.values()}}
    return Functions({name: FUNCTION_TYPES[name]((name, dlls[PROTOTYPES[name][0]])) for name in PROTOTYPES})


def _message(code: int) -> str:
    try:
        text = ctypes.FormatError(code).strip()  # type: ignore[attr-defined]
    except (AttributeError, OSError):
        text = ""
    return f"{text} ({code})" if text else f"error {code}"


# --- elevation ----------------------------------------------------------------------------
def is_elevated(fns: Functions) -> bool | None:
    """TokenElevation of this process's token; None if it cannot be read."""
    token = ctypes.c_void_p()
    if not fns.OpenProcessToken(fns.GetCurrentProcess(), TOKEN_QUERY, ctypes.byref(token)):
        return None
    try:
        elevation = TOKEN_ELEVATION()
        size = ctypes.c_uint32()
        if not fns.GetTokenInformation(token, TokenElevation, ctypes.byref(elevation), ctypes.sizeof(elevation),
                                       ctypes.byref(size)):
            return None
        return bool(elevation.TokenIsElevated)
    finally:
        fns.CloseHandle(token)


def installer_sid(fns: Functions) -> str | None:
    """This process's user SID (TokenUser) when its token is elevated: files the installing
    administrator owns are an administrator's. None otherwise."""
    if not is_elevated(fns):
        return None
    token = ctypes.c_void_p()
    if not fns.OpenProcessToken(fns.GetCurrentProcess(), TOKEN_QUERY, ctypes.byref(token)):
        return None
    try:
        buf, size = ctypes.create_string_buffer(256), ctypes.c_uint32()
        if not fns.GetTokenInformation(token, TokenUser, buf, len(buf), ctypes.byref(size)):
            return None
        sid = SID_AND_ATTRIBUTES.from_buffer(buf).Sid
        return options.sid_text(ctypes.string_at(sid, fns.GetLengthSid(sid)))
    finally:
        fns.CloseHandle(token)


# --- who may change a file ------------------------------------------------------------------
def path_security(fns: Functions, path: str, role: str, ancestor: bool = False) -> options.PathSecurity:
    """Owner and DACL of a file or directory, by SID (GetNamedSecurityInfoW; the decision is
    options.audit's). A path that does not exist has owner None."""
    owner, dacl, sd_ = ctypes.c_void_p(), ctypes.c_void_p(), ctypes.c_void_p()
    rc = fns.GetNamedSecurityInfoW(path, SE_FILE_OBJECT, OWNER_SECURITY_INFORMATION | DACL_SECURITY_INFORMATION,
                                   ctypes.byref(owner), None, ctypes.byref(dacl), None, ctypes.byref(sd_))
    if rc in (ERROR_FILE_NOT_FOUND, ERROR_PATH_NOT_FOUND):
        return options.PathSecurity(path, role, None, (), ancestor)
    if rc:
        raise core.StartupError(f"GetNamedSecurityInfoW({path}) failed: {_message(rc)}", win32_error=rc)
    try:
        owner_sid = options.sid_text(ctypes.string_at(owner.value, fns.GetLengthSid(owner))) if owner.value \
            else "(no owner)"
        if not dacl.value:
            aces = None                                   # a NULL DACL grants everyone everything
        else:
            size = int.from_bytes(ctypes.string_at(dacl.value + 2, 2), "little")    # ACL.AclSize
            aces = tuple(options.parse_acl(ctypes.string_at(dacl.value, size)))
        return options.PathSecurity(path, role, owner_sid, aces, ancestor)
    finally:
        fns.LocalFree(sd_)


def code_security(fns: Functions, paths) -> list[options.PathSecurity]:
    """path_security of every (path, role), then, once each, of the directories above them
    that are not code paths themselves (those had the stricter check)."""
    paths = list(paths)
    out = [path_security(fns, path, role) for path, role in paths]
    seen = {path.lower() for path, _ in paths}
    for path, role in paths:
        for parent in options.ancestors(path):
            if parent.lower() not in seen:
                seen.add(parent.lower())
                out.append(path_security(fns, parent, f"above {role}", ancestor=True))
    return out


# --- registry ------------------------------------------------------------------------------
def _subkey(path: str) -> str:
    prefix = "HKEY_LOCAL_MACHINE\\"
    if not path.upper().startswith(prefix):
        raise ValueError(f"{path}: only HKEY_LOCAL_MACHINE keys are supported")
    return path[len(prefix):]


class RegistryKey:
    """One open HKLM key (RegOpenKeyExW with query and set rights, 64-bit view)."""

    def __init__(self, fns: Functions, path: str, missing: str):
        self.fns, self.path = fns, path
        self.handle = ctypes.c_void_p()
        rc = fns.RegOpenKeyExW(HKEY_LOCAL_MACHINE, _subkey(path), 0,
                               KEY_QUERY_VALUE | KEY_SET_VALUE | KEY_WOW64_64KEY, ctypes.byref(self.handle))
        if rc == ERROR_FILE_NOT_FOUND:
            raise core.StartupError(f"{missing}: registry key {path} not found", win32_error=rc)
        if rc == ERROR_ACCESS_DENIED:
            raise core.StartupError(f"not elevated: cannot open {path} for writing (access denied)",
                                    win32_error=rc)
        if rc:
            raise core.StartupError(f"RegOpenKeyExW({path}) failed: {_message(rc)}", win32_error=rc)

    def query(self, name: str):
        """(REG type, raw bytes), or None if the value does not exist.

        First call with lpData NULL for the size, then read; ERROR_MORE_DATA
        (the value grew in between) sizes again."""
        regtype, size = ctypes.c_uint32(), ctypes.c_uint32(0)
        buf = None
        for _ in range(4):
            rc = self.fns.RegQueryValueExW(self.handle, name, None, ctypes.byref(regtype), buf, ctypes.byref(size))
            if rc == ERROR_FILE_NOT_FOUND:
                return None
            if rc == ERROR_SUCCESS and buf is not None:
                return regtype.value, buf.raw[:size.value]
            if rc not in (ERROR_SUCCESS, ERROR_MORE_DATA):
                raise core.StartupError(f"RegQueryValueExW({self.path}\\{name}) failed: {_message(rc)}",
                                        win32_error=rc)
            buf = ctypes.create_string_buffer(max(size.value, 1))
            size.value = len(buf)
        raise core.StartupError(f"RegQueryValueExW({self.path}\\{name}): the value keeps growing")

    def set(self, name: str, regtype: int, data: bytes) -> None:
        buf = ctypes.create_string_buffer(bytes(data), len(data))
        rc = self.fns.RegSetValueExW(self.handle, name, 0, regtype, buf, len(data))
        if rc == ERROR_ACCESS_DENIED:
            raise core.StartupError(f"not elevated: cannot write {self.path}\\{name} (access denied)",
                                    win32_error=rc)
        if rc:
            raise core.StartupError(f"RegSetValueExW({self.path}\\{name}) failed: {_message(rc)}", win32_error=rc)

    def close(self) -> None:
        if self.handle:
            self.fns.RegCloseKey(self.handle)
            self.handle = ctypes.c_void_p()


class DriverPolicyStore:
    """The sample driver's policy: Parameters key values, and the reload IOCTL on its device."""

    def __init__(self, fns: Functions, key: str = sd.PARAMETERS_KEY, device: str = sd.DEVICE_PATH):
        self.fns, self.device = fns, device
        self.key = RegistryKey(fns, key, f"driver not installed (no {sd.SERVICE_NAME} service parameters; "
                                         f"pnputil /add-driver wfp_redirect_callout.inf /install)")

    def read_values(self) -> dict:
        """{name: (REG type, raw bytes)} for every value the driver reads (names as the driver spells them)."""
        out = {}
        for name in sd.VALUE_TYPES:
            got = self.key.query(name)
            if got is not None:
                out[name] = got
        return out

    def write_value(self, name: str, regtype: int, data: bytes) -> None:
        self.key.set(name, regtype, data)

    def reload(self) -> bytes:
        """IOCTL_WFPRC_RELOAD_POLICY; the WFPRC_RELOAD_RESULT bytes."""
        fns = self.fns
        h = fns.CreateFileW(self.device, GENERIC_WRITE, FILE_SHARE_READ | FILE_SHARE_WRITE, None, OPEN_EXISTING,
                            FILE_ATTRIBUTE_NORMAL, None)
        if h in (None, 0, INVALID_HANDLE_VALUE):
            err = fns.last_error()
            if err in (ERROR_FILE_NOT_FOUND, ERROR_PATH_NOT_FOUND):
                raise core.StartupError(f"driver not loaded: {self.device} does not exist "
                                        f"(sc.exe start {sd.SERVICE_NAME})", win32_error=err)
            if err == ERROR_ACCESS_DENIED:
                raise core.StartupError(f"not elevated: {self.device} admits only SYSTEM and Administrators",
                                        win32_error=err)
            raise core.StartupError(f"CreateFileW({self.device}) failed: {_message(err)}", win32_error=err)
        try:
            out = ctypes.create_string_buffer(sd.RELOAD_RESULT.size)
            returned = ctypes.c_uint32()
            if not fns.DeviceIoControl(h, sd.IOCTL_WFPRC_RELOAD_POLICY, None, 0, out, len(out),
                                       ctypes.byref(returned), None):
                err = fns.last_error()
                if err == ERROR_INVALID_PARAMETER:
                    raise core.PolicyRefused(
                        "the driver refused the policy (ERROR_INVALID_PARAMETER): the previous policy stays in "
                        "force; the driver's debug output (DebugView, prefix wfprc:) names the value",
                        win32_error=err)
                raise core.StartupError(f"IOCTL_WFPRC_RELOAD_POLICY failed: {_message(err)}", win32_error=err)
            return out.raw[:returned.value]
        finally:
            fns.CloseHandle(h)

    def close(self) -> None:
        self.key.close()


# --- console -------------------------------------------------------------------------------
class ConsoleControl:
    """SetConsoleCtrlHandler: Ctrl-C, Ctrl-Break and closing the window set ``stop``.

    For close/logoff/shutdown Windows ends the process when the handler
    returns, so the handler waits (up to 4.5 s) for ``done``: the loop's cleanup
    (unregistering from the driver) gets to run. The callback object is kept
    referenced for as long as it is installed.
    """

    def __init__(self, fns: Functions, stop: threading.Event, done: threading.Event):
        self.fns, self.stop, self.done = fns, stop, done
        self.events: list[int] = []

        def handler(ctrl_type):
            self.events.append(ctrl_type)
            self.stop.set()
            if ctrl_type in (CTRL_CLOSE_EVENT, CTRL_LOGOFF_EVENT, CTRL_SHUTDOWN_EVENT):
                self.done.wait(4.5)
            return 1

        self._callback = HANDLER_ROUTINE(handler)
        self.installed = False

    def install(self) -> None:
        if not self.fns.SetConsoleCtrlHandler(self._callback, 1):
            raise core.StartupError(f"SetConsoleCtrlHandler failed: {_message(self.fns.last_error())}")
        self.installed = True

    def remove(self) -> None:
        if self.installed:
            self.fns.SetConsoleCtrlHandler(self._callback, 0)
            self.installed = False


# --- the service, as the SCM runs it --------------------------------------------------------
def status_reporter(fns: Functions, handle):
    """The thin reporting function: one ServiceStatus -> one SetServiceStatus call."""
    def report(status: core.ServiceStatus) -> None:
        raw = SERVICE_STATUS(status.dwServiceType, status.dwCurrentState, status.dwControlsAccepted,
                             status.dwWin32ExitCode, status.dwServiceSpecificExitCode, status.dwCheckPoint,
                             status.dwWaitHint)
        if not fns.SetServiceStatus(handle, ctypes.byref(raw)):
            LOG.error("SetServiceStatus(%s) failed: %s", status.state, _message(fns.last_error()))
    return report


class ServiceHost:
    """StartServiceCtrlDispatcherW with one ServiceMain; the callbacks stay referenced here.

    ``body(machine)`` runs in ServiceMain's thread (core.run_service); the
    handler, on the dispatcher's thread, only forwards to
    ``machine.handle_control``.
    """

    def __init__(self, fns: Functions, name: str, body, make_machine=core.ServiceStatusMachine):
        self.fns, self.name, self.body, self.make_machine = fns, name, body, make_machine
        self.machine = None
        self.exit_code = core.EXIT_OK
        self._main = SERVICE_MAIN_FUNCTION(self._service_main)
        self._handler = HANDLER_FUNCTION_EX(self._handle)
        self._table = (SERVICE_TABLE_ENTRYW * 2)(SERVICE_TABLE_ENTRYW(name, self._main), SERVICE_TABLE_ENTRYW())

    def _handle(self, control, event_type, event_data, context):
        machine = self.machine
        if machine is None:
            return ERROR_CALL_NOT_IMPLEMENTED
        try:
            return machine.handle_control(control, event_type)
        except Exception:
            LOG.exception("service control %d", control)
            return NO_ERROR

    def _service_main(self, argc, argv):
        try:
            handle = self.fns.RegisterServiceCtrlHandlerExW(self.name, self._handler, None)
            if not handle:
                LOG.error("RegisterServiceCtrlHandlerExW failed: %s", _message(self.fns.last_error()))
                self.exit_code = core.EXIT_STARTUP
                return
            self.machine = self.make_machine(status_reporter(self.fns, handle))
            self.exit_code = self.body(self.machine)
        except BaseException:
            LOG.exception("ServiceMain failed")
            self.exit_code = core.EXIT_RUNTIME
            if self.machine is not None:
                self.machine.stopped(*core.exit_codes(RuntimeError()))

    def dispatch(self) -> int:
        """Blocks until the service has stopped. StartupError if not started by the SCM."""
        if not self.fns.StartServiceCtrlDispatcherW(self._table):
            err = self.fns.last_error()
            if err == ERROR_FAILED_SERVICE_CONTROLLER_CONNECT:
                raise core.StartupError(
                    f"not started by the Service Control Manager: use `sc.exe start {self.name}`, or the `run` "
                    f"command for a console proxy", win32_error=err, exit_code=core.EXIT_USAGE)
            raise core.StartupError(f"StartServiceCtrlDispatcherW failed: {_message(err)}", win32_error=err)
        return self.exit_code


# --- install / uninstall ----------------------------------------------------------------------
class ServiceManager:
    """CreateServiceW / DeleteService through the SCM."""

    def __init__(self, fns: Functions):
        self.fns = fns

    def _scm(self, access: int):
        h = self.fns.OpenSCManagerW(None, None, access)
        if not h:
            err = self.fns.last_error()
            if err == ERROR_ACCESS_DENIED:
                raise core.StartupError("not elevated: the Service Control Manager refused access "
                                        "(run from an elevated prompt)", win32_error=err)
            raise core.StartupError(f"OpenSCManagerW failed: {_message(err)}", win32_error=err)
        return h

    def install(self, plan, start: bool = False) -> None:
        fns = self.fns
        scm = self._scm(SC_MANAGER_CONNECT | SC_MANAGER_CREATE_SERVICE)
        try:
            deps = "".join(d + "\0" for d in plan.dependencies) + "\0" if plan.dependencies else None
            svc = fns.CreateServiceW(scm, plan.service_name, plan.display_name, SERVICE_ALL_ACCESS,
                                     SERVICE_WIN32_OWN_PROCESS, plan.start_type, SERVICE_ERROR_NORMAL,
                                     plan.command_line, None, None, deps, plan.account, None)
            if not svc:
                err = fns.last_error()
                if err == ERROR_SERVICE_EXISTS:
                    raise core.StartupError(f"service {plan.service_name} already exists: uninstall it first",
                                            win32_error=err)
                if err == ERROR_SERVICE_MARKED_FOR_DELETE:
                    raise core.StartupError(f"service {plan.service_name} is marked for deletion: close "
                                            f"services.msc / wait for it to stop, then retry", win32_error=err)
                raise core.StartupError(f"CreateServiceW failed: {_message(err)}", win32_error=err)
            try:
                desc = SERVICE_DESCRIPTIONW(plan.description)
                if not fns.ChangeServiceConfig2W(svc, SERVICE_CONFIG_DESCRIPTION, ctypes.byref(desc)):
                    LOG.warning("could not set the description: %s", _message(fns.last_error()))
                self._restrict(svc, plan)
                if plan.environment:
                    key = RegistryKey(fns, plan.service_key, "service key")
                    try:
                        key.set("Environment", REG_MULTI_SZ, core.encode_value(REG_MULTI_SZ, list(plan.environment)))
                    finally:
                        key.close()
                if start and not fns.StartServiceW(svc, 0, None):
                    err = fns.last_error()
                    raise core.StartupError(f"installed, but StartServiceW failed: {_message(err)} "
                                            f"(see the log and the System event log)", win32_error=err)
            finally:
                fns.CloseServiceHandle(svc)
        finally:
            fns.CloseServiceHandle(scm)

    def _restrict(self, svc, plan) -> None:
        """The service SID in its token, and only the required privileges; a service that cannot
        be restricted is deleted again rather than left running with everything."""
        fns = self.fns
        sid_info = SERVICE_SID_INFO(plan.sid_type)
        multi = ctypes.create_unicode_buffer("".join(p + "\0" for p in plan.required_privileges) + "\0")
        privileges = SERVICE_REQUIRED_PRIVILEGES_INFOW(ctypes.cast(multi, ctypes.c_void_p).value)
        for level, info, what in ((SERVICE_CONFIG_SERVICE_SID_INFO, sid_info, "the service SID type"),
                                  (SERVICE_CONFIG_REQUIRED_PRIVILEGES_INFO, privileges, "the required privileges")):
            if not fns.ChangeServiceConfig2W(svc, level, ctypes.byref(info)):
                err = fns.last_error()
                fns.DeleteService(svc)
                raise core.StartupError(f"could not set {what} (ChangeServiceConfig2W: {_message(err)}); the service "
                                        f"was deleted again", win32_error=err)

    def uninstall(self, name: str, timeout: float = 30.0) -> None:
        fns = self.fns
        scm = self._scm(SC_MANAGER_CONNECT)
        try:
            svc = fns.OpenServiceW(scm, name, SERVICE_STOP | SERVICE_QUERY_STATUS | DELETE)
            if not svc:
                err = fns.last_error()
                if err == ERROR_SERVICE_DOES_NOT_EXIST:
                    raise core.StartupError(f"service {name} is not installed", win32_error=err)
                raise core.StartupError(f"OpenServiceW({name}) failed: {_message(err)}", win32_error=err)
            try:
                status = SERVICE_STATUS()
                if fns.ControlService(svc, SERVICE_CONTROL_STOP, ctypes.byref(status)):
                    deadline = time.monotonic() + timeout
                    while status.dwCurrentState != SERVICE_STOPPED and time.monotonic() < deadline:
                        time.sleep(0.25)
                        if not fns.QueryServiceStatus(svc, ctypes.byref(status)):
                            break
                    if status.dwCurrentState != SERVICE_STOPPED:
                        LOG.warning("service %s did not stop within %.0f s; deleting anyway", name, timeout)
                elif fns.last_error() != ERROR_SERVICE_NOT_ACTIVE:
                    LOG.warning("could not stop %s: %s", name, _message(fns.last_error()))
                if not fns.DeleteService(svc):
                    err = fns.last_error()
                    if err != ERROR_SERVICE_MARKED_FOR_DELETE:
                        raise core.StartupError(f"DeleteService({name}) failed: {_message(err)}", win32_error=err)
            finally:
                fns.CloseServiceHandle(svc)
        finally:
            fns.CloseServiceHandle(scm)

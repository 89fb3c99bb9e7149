package folder

import (
	"fmt"
	"io/fs"
	"unsafe"

	"golang.org/x/sys/windows"
)

// fileBasicInfo is FILE_BASIC_INFO (GetFileInformationByHandleEx, FileBasicInfo).
type fileBasicInfo struct {
	CreationTime, LastAccessTime, LastWriteTime, ChangeTime int64
	FileAttributes                                          uint32
	_                                                       uint32
}

// identity is the volume serial number and file index (a copy written as a new file)
// and the change time (an in-place rewrite that restores the old mtime).
func identity(p string, _ fs.FileInfo) string {
	name, err := windows.UTF16PtrFromString(p)
	if err != nil {
		return ""
	}
	h, err := windows.CreateFile(name, windows.FILE_READ_ATTRIBUTES,
		windows.FILE_SHARE_READ|windows.FILE_SHARE_WRITE|windows.FILE_SHARE_DELETE, nil,
		windows.OPEN_EXISTING, windows.FILE_FLAG_BACKUP_SEMANTICS|windows.FILE_FLAG_OPEN_REPARSE_POINT, 0)
	if err != nil {
		return ""
	}
	defer windows.CloseHandle(h)
	var bh windows.ByHandleFileInformation
	if windows.GetFileInformationByHandle(h, &bh) != nil {
		return ""
	}
	var bi fileBasicInfo
	if windows.GetFileInformationByHandleEx(h, windows.FileBasicInfo, (*byte)(unsafe.Pointer(&bi)), uint32(unsafe.Sizeof(bi))) != nil {
		bi.ChangeTime = 0
	}
	return fmt.Sprintf("%d:%d:%d:%d", bh.VolumeSerialNumber, bh.FileIndexHigh, bh.FileIndexLow, bi.ChangeTime)
}

// heldForWriting is the sharing-mode probe: opening for reading while denying
// writers fails with a sharing violation while another program has it open to write.
func heldForWriting(p string, _ fs.FileInfo) (bool, error) {
	f, err := openExclusive(p)
	if err != nil {
		if isBusy(err) {
			return true, nil
		}
		return false, err
	}
	f.Close()
	return false, nil
}
